"""`vmerpo adapt`: a meta-trained run + a new task's small log -> a policy for that task."""

from __future__ import annotations

import argparse
import json
import sys

from vmerpo.commands.options import add_spec_file, apply_spec_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Meta-test adaptation (MerPO): fit the task-adapted world-model heads theta_j from phi "
        "on the new task's log (proximal term eta), then initialise the task policy from pi_c "
        "and Q_meta and run RAC steps on that log. The new task must not be a meta-training task. "
        "--method merpo_adp (MerPO-Adp) first chooses omega for this task: towards 1 (the log's "
        "behaviour) when pi_c scores below the log's actions in the adapted model, towards 0 when "
        "above; --omega sets it by hand for merpo and rac. "
        "--method picks a baseline on the same world model and latents instead (bc: behaviour "
        "cloning; rac: single-task RAC, omega = 1; lompo: uncertainty-penalized actor-critic), "
        "each pretrained once on the run's pooled meta-train logs (kept in RUN/baselines/) and "
        "then trained on the new task's log."
    )
    p.add_argument("--run", required=True, help="meta-trained run directory (from vmerpo train)")
    p.add_argument("--data", required=True, help="episode store with the new task's small log")
    add_spec_file(p)
    p.add_argument("--out", required=True, help="output run directory for the adapted policy")
    p.add_argument("--task", type=int, help="task id in --data when it holds several")
    p.add_argument("--steps", type=int, help="RAC steps (default: the run's config)")
    p.add_argument("--method", default="merpo", choices=["merpo", "merpo_adp", "meta_policy", "rac", "lompo", "bc"],
                   help="learner to adapt (default merpo). On a run trained with algorithm merpo_v2, merpo "
                        "and meta_policy first infer the task's embedding from the log's rewards; "
                        "meta_policy then takes pi_c at it with no RAC step, merpo_adp is v1 only")
    p.add_argument("--omega", type=float,
                   help="behaviour (1) vs meta-policy (0) regularizer weight at adaptation, for merpo and rac "
                        "(default: the run's config, MerPO's 0.4)")
    p.add_argument("--omega-rule", choices=("fixed", "solved-log"),
                   help="merpo on a merpo_v2 run: how omega is chosen for this task (default: the run's config, "
                        "fixed). fixed: the config's omega (0.4); solved-log: 0 (the meta-policy at the inferred "
                        "task leads) unless every episode of the log succeeded, then the config's omega "
                        "(docs/algorithms.md 5b). --omega overrides either")
    p.add_argument("--start-rule", choices=("meta", "solved-log"),
                   help="merpo on a merpo_v2 run: where the learner starts (default: the run's config: "
                        "solved-log in runs made from the cpu, demo and paper presets, meta otherwise). meta: "
                        "always from pi_c and Q_meta; solved-log: when every episode of the log succeeded, the "
                        "single-task BC baseline's learner (bc --start scratch, same steps and seed; pi_c not "
                        "used), else from pi_c and Q_meta (docs/algorithms.md 5b). --omega overrides it")
    p.add_argument("--start", choices=("pretrained", "scratch"), default="pretrained",
                   help="bc, rac and lompo: start from the run's pooled pretraining (default) or learn from "
                        "the new task's log alone with fresh networks (scratch; the learning benchmark's "
                        "single-task baselines)")
    p.add_argument("--device", help="auto|cpu|cuda (default: the run's; e.g. cpu to adapt a GPU-trained run here)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from learning.merpo_train import adapt

    apply_spec_file(args)
    summary = adapt(args.run, args.data, args.out, overwrite=args.overwrite, task=args.task,
                    steps=args.steps, progress=not args.no_progress, method=args.method, omega=args.omega,
                    device=args.device, start="scratch" if args.start == "scratch" else "own",
                    omega_rule=args.omega_rule, start_rule=args.start_rule, log=lambda msg: print(msg, file=sys.stderr))
    print(json.dumps(summary, indent=1) if args.json else
          f"adapted {summary['method']} to task {summary['task']} from {summary['episodes']} episodes"
          + (f" (omega {summary['omega']:.2f})" if summary["omega"] is not None else "") + f" -> {args.out}")
    return 0
