"""Fixtures for node tests: small exported policies (random weights, contract-2 graph) and
node processes that are always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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


class NodeProcess:
    """A node run as `python -m robot_nodes.X --ros-args ...`; output goes to a log file."""

    def __init__(self, module: str, ros_args: list[str], log: Path) -> None:
        self.log = log
        self._f = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args],
                                     cwd=ROOT, env=dict(os.environ), stdout=self._f,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        if not self._f.closed:
            self._f.flush()
        return self.log.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if not self._f.closed:
            self._f.close()
        return self.proc.returncode


@pytest.fixture
def node_process(tmp_path):
    started: list[NodeProcess] = []

    def start(module: str, *ros_args: str, name: str | None = None) -> NodeProcess:
        n = NodeProcess(module, list(ros_args), tmp_path / f"{name or module.split('.')[-1]}.log")
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop(signal.SIGINT, timeout=5)


def call(node, srv_type, name: str, request=None, timeout: float = 10.0):
    """Call a service from a node spun by another thread; the response or an AssertionError."""
    import threading

    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        done = threading.Event()
        future = client.call_async(request if request is not None else srv_type.Request())
        future.add_done_callback(lambda _: done.set())
        assert done.wait(timeout), f"service {name} did not answer in {timeout}s"
        return future.result()
    finally:
        node.destroy_client(client)
