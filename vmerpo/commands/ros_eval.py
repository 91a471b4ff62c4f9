"""`vmerpo ros-eval`: closed-loop evaluation through ROS 2 (sim_node + policy_node, lockstep)."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from vmerpo.commands.options import add_episode_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Evaluate an exported policy through the deployment path: start sim_node + policy_node "
        "from a ROS 2 launch file (as `vmerpo launch` does, with lockstep:=true and policy:=PATH), "
        "then drive each episode over ROS 2 (sim_node ~/reset with the task id and the episode "
        "seed `vmerpo eval` uses, policy_node ~/enable, success and return read from the "
        "reliable `success`/`reward` topics). Prints the same JSON as `vmerpo eval --json` "
        "(success rate per task and overall, returns, per-episode results), so the two can be "
        "compared: in lockstep they agree episode by episode. The nodes are stopped at the end, "
        "on Ctrl-C and on errors; exit code 1 with one line if a node dies or an episode times "
        "out. All ROS 2 traffic stays in shared memory (robot_nodes/netsafe.py)."
    )
    p.add_argument("--policy", required=True, help="exported policy (PATH.onnx)")
    add_episode_options(p, tasks_default="test", action_repeat=False)
    p.add_argument("--episodes", type=int, default=10, help="episodes per task (default 10)")
    p.add_argument("--launch", default="sim_policy.launch.yaml",
                   help="launch file starting one sim_node and one policy_node: a path or a name "
                   "under the package's launch/ (default sim_policy.launch.yaml); it must declare "
                   "the arguments policy, family, image_size, max_episode_steps, hand_init_noise_m, "
                   "lockstep, start_episode and obs_timeout_s")
    p.add_argument("--timeout-s", type=float, default=120.0,
                   help="seconds one episode may take before the run fails (default 120)")
    p.add_argument("--startup-timeout-s", type=float, default=120.0,
                   help="seconds the nodes get to come up (default 120)")
    p.add_argument("--obs-timeout-s", type=float, default=10.0,
                   help="policy_node's watchdog (obs_timeout_s). In lockstep the simulator waits for "
                   "each command, so a frame's age measures this computer's load, not the robot's; "
                   "a hold injected by a slow machine would make the run differ from `vmerpo eval`. "
                   "Default 10 (the launch file's 0.5 is for real time)")
    p.add_argument("--log", default=None, help="append the nodes' output to this file (default: a "
                   "temp file; named in error messages)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (one line)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_policy(path: str, image_size: int) -> None:
    """Refuse a policy the nodes would refuse, before starting them (one line)."""
    from learning.runtime.policy_runtime import read_spec
    from sim.envs import ACTION_NAMES

    if not path.endswith(".onnx"):
        raise ValueError(f"--policy {path}: ros-eval runs exported policies (.onnx); "
                         "use `vmerpo export` first")
    diff = read_spec(path).mismatches(image_size=image_size, action_type="ee_delta",
                                      action_names=ACTION_NAMES)
    if diff:
        raise ValueError(f"policy {path} does not match this configuration: " + "; ".join(diff))


def run(args: argparse.Namespace) -> int:
    from robot_nodes.ros_eval import RosEvalError, ros_evaluate
    from sim.envs import check_family, check_hand_init_noise, check_image_size, task_set
    from vmerpo.commands.launch import resolve_launch_file

    check_family(args.env)
    check_image_size(args.image_size)
    check_hand_init_noise(args.hand_init_noise)
    for name in ("episodes", "max_episode_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    _check_policy(args.policy, args.image_size)
    tasks = task_set(args.env).select(args.tasks)
    launch_file = resolve_launch_file(args.launch)

    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks) * args.episodes, unit="episode", file=sys.stderr,
                   desc=f"ros-eval {args.policy} on {args.env}", dynamic_ncols=True)

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM: stop the nodes on the way out, as Ctrl-C does

    old_term = signal.signal(signal.SIGTERM, interrupt)
    try:
        result = ros_evaluate(
            args.policy, args.env, tasks, args.episodes, args.seed, launch_file=launch_file,
            image_size=args.image_size, max_episode_steps=args.max_episode_steps,
            hand_init_noise=args.hand_init_noise, goal_pin=args.goal_pin, obs_timeout_s=args.obs_timeout_s, timeout_s=args.timeout_s,
            startup_timeout_s=args.startup_timeout_s, log=args.log,
            progress=(lambda done, total: bar.update(1)) if bar else None)
    except RosEvalError as e:
        print(f"vmerpo ros-eval: error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if bar is not None:
            bar.close()
    result["policy"] = args.policy
    if args.json:
        print(json.dumps(result))
    else:
        from vmerpo.commands.eval import summary_line

        print(f"{args.policy} on {args.env} tasks {args.tasks} through ROS 2: {summary_line(result)}"
              f" ({result['episodes']} episodes, {result['wall_s']:.0f} s)")
    return 0
