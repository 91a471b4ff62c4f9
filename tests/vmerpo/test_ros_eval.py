"""`vmerpo ros-eval` on a trained policy: sim_node + policy_node from the real launch file,
driven over ROS 2 in lockstep, give the same episodes as `vmerpo eval` on the same ONNX
file, tasks and seeds, exactly: success, length, steps to success and return of every
episode (both paths sum the same float64 rewards in the same order). Both verbs run in this
process, which must hold no IP socket afterwards. About 10 s plus the shared training
fixture (~50 s on the loaded 2-core machine when it is not already built)."""

from __future__ import annotations

import json

import pytest

from robot_nodes.netsafe import assert_no_inet_sockets
from tests.vmerpo.conftest import ENV
from vmerpo import cli

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")


def _run(capsys, *argv: str) -> dict:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_ros_eval_of_a_trained_policy_equals_vmerpo_eval(exported, tmp_path, capsys):
    common = ["--policy", str(exported / "policy.onnx"), "--env", ENV, "--tasks", "41,42",
              "--episodes", "1", "--seed", "0", "--max-episode-steps", "60", "--json", "--no-progress"]
    direct = _run(capsys, "eval", *common)
    ros = _run(capsys, "ros-eval", *common, "--log", str(tmp_path / "nodes.log"))
    assert_no_inet_sockets()

    assert ros["path"] == "ros" and ros["episodes"] == direct["episodes"] == 2
    # Bit for bit: the same float64 rewards summed in the same order on both paths.
    # (the goal distances are measured in-process only: the ROS path's simulator is another process)
    no_dist = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_distance")} for r in rs]  # noqa: E731
    assert no_dist(ros["episode_results"]) == no_dist(direct["episode_results"])
    assert all(r["final_distance"] is None for r in ros["episode_results"])
    assert all(r["final_distance"] > 0 for r in direct["episode_results"])
    strip = lambda d: {t: {k: v for k, v in s.items() if not k.endswith("_distance")} for t, s in d.items()}  # noqa: E731
    assert strip(ros["per_task"]) == strip(direct["per_task"])
    assert ros["success_rate"] == direct["success_rate"] and ros["mean_return"] == direct["mean_return"]
