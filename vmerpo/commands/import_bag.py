"""`vmerpo import-bag BAG... [--manifest FILE] --out logs.zarr ...`: rosbag2 recordings into
the episode store, one bag or many (a directory of bags, a manifest of bags of several tasks)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _bools(text: str) -> list[bool]:
    table = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    try:
        return [table[x.strip().lower()] for x in text.split(",") if x.strip()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected comma-separated 1/0 values, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = textwrap.fill(
        "Import rosbag2 recordings (sqlite3 or MCAP) into a zarr episode store: ticks follow the "
        "camera (thinned to --control-hz), state = newest joint state stamped at or before each "
        "image (header stamps; the bag's log time only for a message without one, counted in the "
        "summary), action = first command after it or the command naming the frame; episodes split "
        "on camera gaps or marker messages; images resized by the one preprocessing function (centre "
        "crop). A reward source is required: --reward-topic, --reward sparse-success (with --success "
        "or --success-topic), or --reward-fn.", width=88, break_on_hyphens=False)
    p.epilog = """\
many bags into one store:
  vmerpo import-bag bags/ --out logs.zarr --task-id 3 ...   every bag in bags/ (sorted), task 3
  vmerpo import-bag a/ b.mcap --manifest more.yaml ...      the listed bags, then the manifest's
  The first bag creates the store (or appends with --append, or replaces it with --overwrite),
  the others append with the store's action limits, names and rate; a store the import creates
  without --action-low/--action-high gets the range of every bag's commands. One summary at
  the end: per bag its task, episodes, frames, skipped frames and dropped ticks; the totals.
  A manifest (YAML or JSON) lists bags of several tasks; paths are relative to the file:
    - {bag: pick_a/, task_id: 3, task_name: pick red}
    - {bag: pick_b.mcap, task_id: 4, split: test, success: [1, 0]}
  A directory entry stands for each bag in it. The positional bags take --task-id, --task-name
  and --split; manifest entries their own (split defaults to train).
  A bag that fails stops the import with one line naming it, the bags imported before it and
  those not tried. The store is append-only: what was committed stays. Rerun with --append
  and the same bags to continue: a bag's episodes already in the store (provenance `bag`,
  `bag_start_ns`, `bag_episode`) are not imported again; a new recording at the same path is.
"""
    p.add_argument("bag", nargs="*", metavar="BAG_OR_DIR",
                   help="rosbag2 directory, .db3/.mcap file, or a directory of bags (each bag in it, sorted)")
    p.add_argument("--manifest", metavar="FILE",
                   help="YAML/JSON list of {bag, task_id, task_name?, split?, success?}: bags of several tasks, "
                        "imported after the positional bags")
    p.add_argument("--out", required=True, help="zarr store to create (or append to with --append)")
    p.add_argument("--image-topic", required=True)
    p.add_argument("--command-topic", required=True,
                   help="Float64MultiArray, TwistStamped or Twist commands")
    p.add_argument("--joint-states-topic", help="sensor_msgs/JointState (the state)")
    p.add_argument("--task-id", type=int, default=0, help="task of the positional bags (default 0)")
    p.add_argument("--task-name", default="")
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="the task's split in the store's task table; a task id the table lacks is added "
                        "(default train)")
    p.add_argument("--episode-gap-s", type=float, default=1.0,
                   help="a camera pause longer than this ends an episode (default 1.0)")
    p.add_argument("--episode-marker-topic", help="every message on this topic starts a new episode")
    p.add_argument("--control-hz", type=float, default=0.0, help="tick rate; 0: every camera frame")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--state-names", type=_names, help="joint names forming the state (default: all)")
    p.add_argument("--action-names", type=_names)
    p.add_argument("--action-low", type=_floats)
    p.add_argument("--action-high", type=_floats)
    p.add_argument("--action-type", choices=["ee_delta", "twist", "joint_position", "joint_velocity"])
    p.add_argument("--robot", default="robot")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--reward-topic", help="std_msgs/Float64 or Float32 reward topic")
    src.add_argument("--reward", choices=["sparse-success"], help="1 on the last row of successful episodes")
    src.add_argument("--reward-fn", metavar="MODULE:FUNCTION",
                     help="fn(episode: dict of arrays, success: bool|None) -> rewards [T]")
    p.add_argument("--success", type=_bools, help="per-episode success, e.g. 1,0,1 (sparse-success)")
    p.add_argument("--success-topic", help="std_msgs/Bool; an episode succeeded if any message is true")
    p.add_argument("--bad-frames", choices=["skip", "refuse"], default="skip",
                   help="an image that cannot be decoded: skip its row (counted per episode in the summary "
                        "and the episode's provenance; default) or refuse the bag naming the frame")
    p.add_argument("--append", action="store_true",
                   help="append to an existing store: action limits, action names and the rate come from "
                        "the store unless given (a measured camera rate within 2 %% of the store's is taken "
                        "as the store's), a new --task-id extends its task table")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--zarr-format", type=int, choices=[2, 3], default=2)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from learning.bag_import import (
        BagImportConfig,
        expand_bags,
        format_batch_summary,
        import_bag,
        import_bags,
        read_manifest,
    )

    if not args.bag and not args.manifest:
        raise ValueError("give a bag, a directory of bags, or --manifest FILE")
    if Path(args.out).exists() and not (args.append or args.overwrite):
        raise FileExistsError(f"{args.out} exists; pass --append or --overwrite")
    if args.success is not None and args.reward != "sparse-success":
        raise ValueError("--success only applies with --reward sparse-success")
    bags = expand_bags(args.bag)
    entries = [{"bag": b, "task_id": args.task_id, "task_name": args.task_name, "split": args.split,
                "success": args.success} for b in bags]
    if args.success is not None and len(bags) > 1:
        raise ValueError(f"--success lists one bag's episodes but {len(bags)} bags are given; give each bag's "
                         "in a --manifest (success: [1, 0, ...]) or use --success-topic")
    if args.manifest:
        entries += read_manifest(args.manifest)
    reward = "topic" if args.reward_topic else ("fn" if args.reward_fn else "sparse-success")
    if any(e["success"] is not None for e in entries) and reward != "sparse-success":
        raise ValueError("a manifest's `success` only applies with --reward sparse-success")
    base = BagImportConfig(
        bag="", out=args.out, image_topic=args.image_topic, command_topic=args.command_topic,
        joint_states_topic=args.joint_states_topic,
        episode_gap_s=args.episode_gap_s, marker_topic=args.episode_marker_topic,
        control_hz=args.control_hz, image_size=args.image_size, state_names=args.state_names,
        action_names=args.action_names, action_low=args.action_low, action_high=args.action_high,
        action_type=args.action_type, robot=args.robot, reward=reward, reward_topic=args.reward_topic,
        success_topic=args.success_topic, reward_fn=args.reward_fn,
        overwrite=args.overwrite, zarr_format=args.zarr_format, bad_frames=args.bad_frames,
    )
    configs = [dataclasses.replace(base, bag=e["bag"], task_id=e["task_id"], task_name=e["task_name"],
                                   split=e["split"], success=e["success"]) for e in entries]
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if len(configs) == 1 and not args.manifest:  # one bag: its summary, as always
        summary = import_bag(configs[0], log=log)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"imported {summary['episodes_imported']} episodes ({summary['rows']} rows) from "
                  f"{summary['bag']} into {summary['out']} ({summary['episodes_in_store']} episodes in the store; "
                  f"{summary['ticks_dropped']} ticks dropped, {summary['frames_skipped']} undecodable frames skipped"
                  + (f", {summary['episodes_already_in_store']} episodes already in the store"
                     if summary["episodes_already_in_store"] else "")
                  + (f", {summary['rows_log_time']} rows paired by log time" if summary["rows_log_time"] else "")
                  + ")")
        return 0
    result = import_bags(configs, log=log)
    print(json.dumps(result, indent=2) if args.json else format_batch_summary(result))
    return 0
