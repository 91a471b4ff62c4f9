"""The deployment path equals the validated path: sim_node + policy_node as separate
processes, started from launch/sim_policy.launch.yaml and driven in lockstep by
`robot_nodes.ros_eval` (what `vmerpo ros-eval` runs), give the same episodes as direct
evaluation (`vmerpo eval`) with the same ONNX policy, tasks, seeds and limiter settings.

With a lockstep sim, the same pixels (the one preprocessing function), the same runtime and
the same limiter, the two paths are deterministic and agree episode by episode, not only
within binomial noise. The default run is short (random-weight policy, 2 tasks x 40 steps);
set VMERPO_PARITY_POLICY=/path/policy.onnx (a trained policy) and run with -m slow for more
episodes; tests/vmerpo/test_ros_eval.py runs the verb on a trained policy."""

from __future__ import annotations

import json
import os

import pytest

from robot_nodes.netsafe import assert_no_inet_sockets
from robot_nodes.ros_eval import ros_evaluate

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("metaworld")


def vmerpo_eval(policy, family, tasks, episodes, max_steps, seed=0, hand_init_noise=0.0):
    """`vmerpo eval --policy X.onnx --json`: the validated path, per task."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "vmerpo", "eval", "--policy", str(policy), "--env", family,
         "--tasks", ",".join(map(str, tasks)), "--episodes", str(episodes), "--seed", str(seed),
         "--max-episode-steps", str(max_steps), "--hand-init-noise", str(hand_init_noise), "--json",
         "--no-progress"],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_same_episodes(ros, direct):
    """Episode by episode and bit for bit: same task, seed, success, length, steps to success
    and return (both paths sum the same float64 rewards in the same order). The goal distances
    are measured in-process only (the ROS path's simulator is another process)."""
    def drop(rs):
        return [{k: v for k, v in r.items() if not k.endswith("_distance")} for r in rs]

    assert drop(ros["episode_results"]) == drop(direct["episode_results"])
    assert all(r["final_distance"] is None for r in ros["episode_results"])


@pytest.mark.parametrize("noise, episodes", [(0.0, 1), (0.05, 2)])
def test_lockstep_ros_path_equals_vmerpo_eval(ee_policy, tmp_path, noise, episodes):
    """Deterministic paths: every episode agrees, so per-task success and return do too;
    with random hand starts (drawn from the episode seed on both paths) as well."""
    tasks, steps = [0, 41], 40
    direct = vmerpo_eval(ee_policy, "reach-v3", tasks, episodes, steps, hand_init_noise=noise)
    ros = ros_evaluate(ee_policy, "reach-v3", tasks, episodes, max_episode_steps=steps,
                       hand_init_noise=noise, log=tmp_path / "nodes.log")
    assert_no_inet_sockets()
    assert all(r["length"] == steps for r in ros["episode_results"])
    assert ros["hand_init_noise"] == direct["hand_init_noise"] == noise
    assert_same_episodes(ros, direct)
    if noise:  # the starts differ, so two episodes of one task do too
        returns = [r["return"] for r in direct["episode_results"] if r["task_id"] == 41]
        assert returns[0] != returns[1]
    for t in map(str, tasks):
        assert ros["per_task"][t]["success_rate"] == direct["per_task"][t]["success_rate"]


@pytest.mark.slow
def test_trained_policy_success_rate_matches(tmp_path):
    path = os.environ.get("VMERPO_PARITY_POLICY")
    if not path:
        pytest.skip("set VMERPO_PARITY_POLICY to a trained policy.onnx")
    from learning.runtime.policy_runtime import read_spec

    family = read_spec(path).env.get("family", "reach-v3")
    tasks, episodes, steps = list(range(40, 45)), 4, 150
    direct = vmerpo_eval(path, family, tasks, episodes, steps)
    ros = ros_evaluate(path, family, tasks, episodes, max_episode_steps=steps, timeout_s=300,
                       log=tmp_path / "nodes.log")
    assert_same_episodes(ros, direct)
