"""`vmerpo collect`: behaviour-policy episodes from a MuJoCo task family into a zarr store."""

from __future__ import annotations

import argparse
import json

from vmerpo.commands.options import add_aim, add_episode_options, aim_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_episode_options(parser, tasks_default="10")
    parser.add_argument("--episodes-per-task", type=int, default=5, help="episodes per task (default 5)")
    parser.add_argument("--quality", default="medium", help="expert | medium | random | mixed")
    add_aim(parser)
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes (0: run in this process)")
    parser.add_argument("--out", required=True, help="output store, e.g. logs.zarr")
    parser.add_argument("--zarr-format", type=int, default=2, choices=(2, 3))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted collection into --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from sim.collect import CollectConfig, collect
    from sim.envs import check_family, task_set

    check_family(args.env)
    tasks = task_set(args.env).select(args.tasks)
    cfg = CollectConfig(
        family=args.env, out=args.out, tasks=tasks, episodes_per_task=args.episodes_per_task,
        quality=args.quality, image_size=args.image_size,
        max_episode_steps=args.max_episode_steps, action_repeat=args.action_repeat,
        seed=args.seed, hand_init_noise=args.hand_init_noise, goal_pin=args.goal_pin, aim=aim_of(args),
        workers=args.workers, overwrite=args.overwrite, resume=args.resume,
        zarr_format=args.zarr_format,
    )
    summary = collect(cfg, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary))
    else:
        rate = summary["success_rate_written"]
        print(f"{summary['out']}: wrote {summary['episodes_written']} episodes "
              f"({summary['frames_written']} frames, {summary['frames_per_s']} frames/s"
              + (f", success {rate:.2f}" if rate is not None else "")
              + (f"; {summary['episodes_skipped']} already there" if args.resume else "") + ")")
    return 0
