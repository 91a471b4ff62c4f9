"""Fixtures for node tests: small exported policies (random weights, contract-2 graph) and
node processes that are always stopped (`robot_nodes.testing.NodeProcess`)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from robot_nodes.testing import NodeProcess, call  # noqa: F401 - shared with the node tests

ROOT = Path(__file__).resolve().parents[2]
META_ACTIONS = ["ee_dx", "ee_dy", "ee_dz", "gripper_effort"]
META_STATE = ["ee_x", "ee_y", "ee_z", "gripper_opening"] + [f"right_j{i}" for i in range(7)]


def _spec(**kw):
    from learning.runtime.spec import PolicySpec

    base = dict(image_size=64, action_names=META_ACTIONS, action_low=[-1.0] * 4, action_high=[1.0] * 4,
                deter_size=32, stoch_size=8, action_type="ee_delta", hold_action=[0.0] * 4,
                state_names=META_STATE, control_hz=80.0, crop="center",
                env={"family": "reach-v3"})
    base.update(kw)
    return PolicySpec(**base)


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory) -> Path:
    """ee_delta (Meta-World-like) and joint_position policies, exported once per session."""
    pytest.importorskip("torch")
    from learning.export import make_test_policy

    d = tmp_path_factory.mktemp("policies")
    make_test_policy(d / "ee_delta.onnx", _spec(), seed=0)
    make_test_policy(d / "joint_position.onnx", _spec(
        action_names=["j0", "j1"], action_low=[-2.0, -1.0], action_high=[2.0, 1.0],
        action_type="joint_position", hold_action="current position", state_names=["j0", "j1"],
        uses_state=True, control_hz=30.0), seed=1)
    return d


@pytest.fixture(scope="session")
def ee_policy(policy_dir) -> Path:
    return policy_dir / "ee_delta.onnx"


@pytest.fixture(scope="session")
def position_policy(policy_dir) -> Path:
    return policy_dir / "joint_position.onnx"


@pytest.fixture
def node_process(tmp_path):
    started: list[NodeProcess] = []

    def start(module: str, *ros_args: str, name: str | None = None, prefix: tuple = ()) -> NodeProcess:
        n = NodeProcess(module, list(ros_args), tmp_path / f"{name or module.split('.')[-1]}.log", prefix)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop(signal.SIGINT, timeout=5)
