"""`vmerpo eval`: closed-loop evaluation in MuJoCo through the one safety limiter."""

from __future__ import annotations

import argparse
import json
import os
import sys

from vmerpo.commands.options import (
    add_aim,
    add_episode_options,
    add_spec_file,
    aim_of,
    apply_spec_file,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True,
                        help="expert | medium | random | RUN_DIR | PATH.onnx")
    add_episode_options(parser, tasks_default="test")
    add_aim(parser)
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task (default 10)")
    parser.add_argument("--video", default=None, help="write the first episodes to this .mp4/.gif")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_spec_file(parser)


def load_policy(spec: str, env, aim: bool | None = None):
    """A policy for `sim.evaluate.evaluate` from the --policy argument (`aim`: the scripted
    policies' target, None the family's default)."""
    from sim.policies import make_behavior_policy

    if spec in ("expert", "medium", "random"):
        return make_behavior_policy(spec, env, aim)
    if spec.endswith(".onnx"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"--policy {spec}: no such ONNX file")
        from learning.runtime.policy_runtime import PolicyRuntime

        return LatentPolicy(PolicyRuntime(spec, providers="cpu", intra_op_threads=1), env)
    if os.path.isdir(spec):
        from learning.merpo_train import TorchPolicy

        return LatentPolicy(TorchPolicy(spec), env)
    raise ValueError(f"--policy {spec!r}: expected expert, medium, random, a run directory "
                     "or a .onnx file")


class LatentPolicy:
    """A trained recurrent latent policy behind `evaluate`'s policy interface: the exported
    ONNX file (PolicyRuntime) or a run directory's torch module (TorchPolicy), which share
    one interface. Refuses a policy whose spec does not match the environment."""

    def __init__(self, runtime, env) -> None:
        self.rt = runtime
        self.rt.check_compatible(
            image_size=env.image_size, action_names=env.action_names,
            action_dim=len(env.action_names), action_type="ee_delta",
            action_low=env.action_low.tolist(), action_high=env.action_high.tolist(),
            control_hz=env.control_hz,
            state_names=env.state_names if self.rt.spec.uses_state else None,
        )
        from sim.envs import check_policy_goal_pin

        check_policy_goal_pin(self.rt.spec.env, getattr(env, "goal_pin", False))

    def reset(self) -> None:
        self.rt.reset()

    def act(self, observation):
        state = observation["state"] if self.rt.spec.uses_state else None
        return self.rt.act(observation["image"], state)

    def set_applied_action(self, applied) -> None:
        self.rt.set_applied_action(applied)


def summary_line(result: dict) -> str:
    """`success ..., mean return ..., mean length ...[, mean steps to success ...]` of an
    evaluation result (shared by `vmerpo eval` and `vmerpo ros-eval`)."""
    steps = result["mean_steps_to_success"]
    return (f"success {result['success_rate']:.3f}, mean return {result['mean_return']:.1f}, "
            f"mean length {result['mean_length']:.0f}"
            + (f", mean steps to success {steps:.1f}" if steps is not None else ""))


def run(args: argparse.Namespace) -> int:
    from sim.envs import check_family, check_image_size, make_env, task_set
    from sim.evaluate import evaluate

    apply_spec_file(args)  # RUN_DIR trained on another tool's store with --spec FILE
    check_family(args.env)
    check_image_size(args.image_size)
    if args.episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {args.episodes}")
    tasks = task_set(args.env).select(args.tasks)
    env = make_env(args.env, args.image_size, args.max_episode_steps, args.action_repeat,
                   hand_init_noise=args.hand_init_noise, goal_pin=args.goal_pin)
    try:
        policy = load_policy(args.policy, env, aim_of(args))
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks) * args.episodes, unit="episode", file=sys.stderr,
                       desc=f"eval {args.policy} on {args.env}", dynamic_ncols=True)
        try:
            result = evaluate(policy, env, tasks, args.episodes, seed=args.seed,
                              video=args.video,
                              progress=(lambda done, total: bar.update(1)) if bar else None)
        finally:
            if bar is not None:
                bar.close()
    finally:
        env.close()
    result["policy"] = args.policy
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.policy} on {args.env} tasks {args.tasks}: {summary_line(result)}"
              + f" ({result['episodes']} episodes)")
        if args.video:
            print(f"video: {args.video}")
    return 0
