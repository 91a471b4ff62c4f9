"""`vmerpo train`: world model (unless given) + MerPO meta-training into a run directory."""

from __future__ import annotations

import argparse
import json
import sys

from vmerpo.commands.options import add_spec_file, apply_spec_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train the latent world model on the store's meta-train tasks (or reuse one with "
        "--world-model), encode the logs once into latents, and meta-train MerPO (meta-policy "
        "pi_c, meta-critic Q_meta, per-task RAC learners). Writes config, TensorBoard logs and "
        "checkpoints into --out; --resume continues a killed run exactly."
    )
    p.add_argument("--data", required=True, help="episode store with task ids and a meta-train split")
    add_spec_file(p)
    p.add_argument("--config", default="cpu", help="preset tiny|cpu|paper or a JSON/YAML file (default cpu)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--algorithm", choices=("merpo", "merpo_v2"),
                   help="merpo: MerPO as published (task-blind pi_c averaged from per-task learners); "
                        "merpo_v2: a task embedding inferred from each log's rewards conditions pi_c and "
                        "Q_meta, one conditioned learner over the pooled tasks (docs/algorithms.md; "
                        "default: the config's, merpo)")
    p.add_argument("--world-model", help="an existing world-model run directory to reuse")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--device", help="auto|cpu|cuda (default: the config's, auto)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="meta-steps between closed-loop MuJoCo evaluations of the meta-policy pi_c "
                        "(success and return in TensorBoard under eval/; default: the config's "
                        "eval_every; needs a store recorded by `vmerpo collect`)")
    p.add_argument("--eval-tasks", default="2", help="tasks for those evaluations: a count of the first "
                   "meta-train tasks or ids like 0,3 (default 2)")
    p.add_argument("--eval-episodes", type=int, default=2, help="episodes per task and evaluation (default 2)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from learning.merpo_train import load_config, train

    apply_spec_file(args)
    cfg = load_config(args.config)
    if args.algorithm:
        cfg.algorithm = args.algorithm
    if args.device:
        cfg.device = args.device
        cfg.world_model.device = args.device
    if args.eval_every is not None:
        cfg.eval_every = args.eval_every
    evaluate = None
    if cfg.eval_every and cfg.algorithm == "merpo_v2":
        print("vmerpo train: note: --eval-every/eval_every evaluates MerPO v1's task-blind pi_c; a merpo_v2 "
              "run's pi_c needs a task's inferred embedding, so it is not evaluated during training (evaluate it "
              "with `vmerpo adapt --method meta_policy` and `vmerpo eval`)", file=sys.stderr)
        cfg.eval_every = 0
    if cfg.eval_every:
        from vmerpo.train_eval import sim_evaluator

        evaluate = sim_evaluator(args.data, args.out, args.eval_tasks, args.eval_episodes)
    summary = train(args.data, cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                    world_model=args.world_model, progress=not args.no_progress, evaluate=evaluate,
                    log=lambda msg: print(msg, file=sys.stderr))
    from learning import distributed

    if not distributed.current().is_main:
        return 0  # under torchrun, rank 0 reports
    print(json.dumps(summary, indent=1) if args.json else
          f"trained {summary['meta_steps']} meta-steps on tasks {summary['tasks']} in "
          f"{summary['seconds'] / 60:.1f} min -> {args.out}")
    return 0
