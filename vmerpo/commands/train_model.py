"""`vmerpo train-model`: train the latent world model (LOMPO RSSM + prior ensemble; per-task
heads and the MerPO proximal term when the store has several training tasks)."""

from __future__ import annotations

import argparse
import json

from vmerpo.commands.options import add_spec_file, apply_spec_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="episode store (logs.zarr)")
    add_spec_file(p)
    p.add_argument("--config", default="cpu",
                   help="preset tiny|cpu|bench|paper, or a JSON/YAML file {preset, overrides, model: {...}}")
    p.add_argument("--out", required=True, help="run directory (config, checkpoints, TensorBoard, PNGs)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--device", default=None, help="auto (CUDA with bf16 autocast when present) | cpu | cuda")
    p.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    p.add_argument("--seed", type=int, default=None, help="override the seed")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from learning.world_model_train import load_config, train

    apply_spec_file(args)
    cfg = load_config(args.config)
    overrides = {k: v for k, v in (("device", args.device), ("steps", args.steps), ("seed", args.seed))
                 if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    summary = train(args.data, cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                    progress=not args.no_progress)
    from learning import distributed

    if not distributed.current().is_main:
        return 0  # under torchrun, rank 0 reports
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"trained to step {summary['step']} in {summary['seconds']:.0f} s "
              f"({summary['frames_per_s']:.0f} frames/s, data wait {100 * summary['data_wait_share']:.1f} %); "
              f"run: {args.out}")
    return 0
