"""The deployment path equals the validated path: sim_node + policy_node as separate
processes in lockstep give the same episodes as direct evaluation (`sim.evaluate`) with the
same ONNX policy, tasks and limiter settings.

With a lockstep sim, the same pixels (the one preprocessing function), the same runtime and
the same limiter, the two paths are deterministic and agree exactly, not only within
binomial noise; the test checks per-task success rate and mean return against `vmerpo eval`. The default run is short
(random-weight policy, 2 tasks x 40 steps); set VMERPO_PARITY_POLICY=/path/policy.onnx (a
trained policy) and run with -m slow for the success-rate comparison on more episodes."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from robot_nodes.netsafe import assert_no_inet_sockets
from tests.robot_nodes.conftest import call
from tests.rosutil import ros_context, wait_for

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("metaworld")


def vmerpo_eval(policy, family, tasks, episodes, max_steps, seed=0):
    """`vmerpo eval --policy X.onnx --json`: the validated path, per task."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "vmerpo", "eval", "--policy", str(policy), "--env", family,
         "--tasks", ",".join(map(str, tasks)), "--episodes", str(episodes), "--seed", str(seed),
         "--max-episode-steps", str(max_steps), "--json", "--no-progress"],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ros_evaluation(policy, family, tasks, episodes, max_steps, node_process, timeout_s=120.0):
    from rcl_interfaces.msg import Parameter as ParamMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_msgs.msg import Float64
    from std_srvs.srv import Trigger

    sim = node_process("robot_nodes.sim_node", "--params-file", "config/sim_node.yaml",
                       "-p", f"family:={family}", "-p", f"max_episode_steps:={max_steps}",
                       "-p", "start_episode:=false", "-p", "lockstep:=true")
    pol = node_process("robot_nodes.policy_node", "--params-file", "config/policy_node.yaml",
                       "--params-file", "config/policy_node_sim.yaml", "-p", f"policy:={policy}")
    results = []
    with ros_context("parity_driver") as (_, _, (node,)):
        # Count steps by the reliable `reward` topic (one message per sim step): the best-effort
        # images may be dropped on the way to this driver even when the nodes got them.
        steps = [0]
        node.create_subscription(Float64, "reward", lambda _: steps.__setitem__(0, steps[0] + 1), 50)
        assert wait_for(lambda: node.count_publishers("reward") > 0 and node.count_publishers("command") > 0
                        and node.count_subscribers("reward") > 0, 60), sim.output() + pol.output()
        for task in tasks:
            for _ in range(episodes):
                req = SetParameters.Request(parameters=[ParamMsg(name="task_id", value=ParameterValue(
                    type=ParameterType.PARAMETER_INTEGER, integer_value=int(task)))])
                assert call(node, SetParameters, "sim_node/set_parameters", req, timeout=30).results[0].successful
                assert call(node, Trigger, "policy_node/reset", timeout=30).success, pol.output()
                steps[0] = 0
                res = call(node, Trigger, "sim_node/reset", timeout=30)
                assert res.success, res.message
                finished = json.loads(res.message)["finished"]
                if finished is not None:
                    results.append(finished)
                assert wait_for(lambda: steps[0] >= max_steps, timeout_s), (
                    f"episode stalled at {steps[0]} steps\n" + sim.output()[-2000:] + pol.output()[-2000:])
                time.sleep(0.05)
        results.append(json.loads(call(node, Trigger, "sim_node/reset").message)["finished"])
        assert_no_inet_sockets()
    assert sim.alive() and pol.alive()
    return results


def _per_task(ros, tasks):
    out = {}
    for t in tasks:
        rs = [r for r in ros if r["task_id"] == t]
        out[str(t)] = {"success_rate": float(np.mean([r["success"] for r in rs])),
                       "mean_return": float(np.mean([r["return"] for r in rs])),
                       "mean_length": float(np.mean([r["length"] for r in rs]))}
    return out


def test_lockstep_ros_path_equals_vmerpo_eval(ee_policy, node_process):
    """Deterministic paths: per-task success and mean return agree to float precision."""
    tasks, episodes, steps = [0, 41], 1, 40
    direct = vmerpo_eval(ee_policy, "reach-v3", tasks, episodes, steps)
    ros = ros_evaluation(ee_policy, "reach-v3", tasks, episodes, steps, node_process)
    assert all(r["done"] and r["length"] == steps for r in ros)
    got = _per_task(ros, tasks)
    for t in map(str, tasks):
        assert got[t]["success_rate"] == direct["per_task"][t]["success_rate"], (t, got, direct)
        assert np.isclose(got[t]["mean_return"], direct["per_task"][t]["mean_return"], rtol=1e-5), (t, got, direct)


@pytest.mark.slow
def test_trained_policy_success_rate_matches(node_process):
    path = os.environ.get("VMERPO_PARITY_POLICY")
    if not path:
        pytest.skip("set VMERPO_PARITY_POLICY to a trained policy.onnx")
    from learning.runtime.policy_runtime import read_spec

    family = read_spec(path).env.get("family", "reach-v3")
    tasks, episodes, steps = list(range(40, 45)), 4, 150
    direct = vmerpo_eval(path, family, tasks, episodes, steps)
    ros = ros_evaluation(path, family, tasks, episodes, steps, node_process, timeout_s=300)
    p_direct, p_ros = direct["success_rate"], float(np.mean([r["success"] for r in ros]))
    n = len(ros)
    noise = 2 * np.sqrt(2 * max(p_direct * (1 - p_direct), 1.0 / n) / n)  # two binomial s.e.s
    assert abs(p_ros - p_direct) <= noise, (p_direct, p_ros)
