"""Exercising nodes from outside, shared by the tests and `vmerpo bench faults`: a node in its own
process, an in-process rclpy context whose teardown never hangs (docs/environment.md),
service calls, and the malformed-input set that policy_node must survive.

Torch-free. rclpy is imported only inside the functions, after the SHM-only DDS configuration
(`robot_nodes/netsafe.py`) is in place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from robot_nodes.netsafe import ensure_safe_before_rclpy

ROOT = Path(__file__).resolve().parents[1]


# -- processes and contexts ------------------------------------------------------------------
class NodeProcess:
    """A node run as `python -m robot_nodes.X --ros-args ...`; output goes to a log file. The
    child inherits this process's environment, so apply the SHM-only config first."""

    def __init__(self, module: str, ros_args: Sequence[str], log: Path, prefix: Sequence[str] = ()) -> None:
        ensure_safe_before_rclpy()  # the child reads the same environment
        self.log = Path(log)
        self._f = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        # `prefix`: a wrapper that execs the node (same pid), e.g. small_disk_prefix()
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", module, "--ros-args", *ros_args],
                                     cwd=ROOT, env=dict(os.environ), stdout=self._f,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        if not self._f.closed:
            self._f.flush()
        return self.log.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
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


@contextmanager
def ros_context(*node_names: str) -> Iterator[tuple[Any, Any, list[Any]]]:
    """Own context, nodes spun by a SingleThreadedExecutor in a daemon thread; teardown that
    never hangs. Yields (context, executor, nodes).

    Not the MultiThreadedExecutor: its Python worker threads hold the GIL so much that the
    caller's thread, the one that publishes test frames, slept 350 ms for a 20 ms
    `time.sleep` (measured: 12 frames in 5 s instead of 150 with a 100 Hz joint-state stream)."""
    ensure_safe_before_rclpy()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = [rclpy.create_node(name, context=ctx) for name in node_names]
    executor = SingleThreadedExecutor(context=ctx)
    for n in nodes:
        executor.add_node(n)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield ctx, executor, nodes
    finally:
        for n in nodes:
            executor.remove_node(n)
            n.destroy_node()
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=2.0)
        rclpy.try_shutdown(context=ctx)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, period: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


def _answer(client: Any, request: Any, timeout: float) -> Any:
    """One request on `client` (its node spun by another thread): the response, or None if none
    came within `timeout` (the request is then dropped)."""
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _: done.set())
    if done.wait(timeout):
        return future.result()
    client.remove_pending_request(future)
    return None


def call(node: Any, srv_type: Any, name: str, request: Any = None, timeout: float = 10.0) -> Any:
    """Call a service from a node spun by another thread; the response or an AssertionError."""
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        res = _answer(client, request if request is not None else srv_type.Request(), timeout)
        assert res is not None, f"service {name} did not answer in {timeout}s"
        return res
    finally:
        node.destroy_client(client)


def enable_policy(node: Any, service: str, timeout: float = 20.0, attempt_s: float = 2.0) -> Any:
    """Call `service` (a policy_node's ~/enable) with True until it succeeds or `timeout` passes;
    the last response (an AssertionError if none came). policy_node refuses while it holds no
    fresh joint state, which on a loaded machine can outlast the first call after a
    JointStateStream starts. One client for every attempt; an attempt that gets no answer in
    `attempt_s` (a response lost while the client's reader was still being matched) is retried."""
    from std_srvs.srv import SetBool

    client = node.create_client(SetBool, service)
    try:
        deadline = time.monotonic() + timeout
        assert client.wait_for_service(timeout_sec=timeout), f"service {service} not available"
        last = None
        while time.monotonic() < deadline:
            res = _answer(client, SetBool.Request(data=True), min(attempt_s, max(0.1, deadline - time.monotonic())))
            if res is not None:
                if res.success:
                    return res
                last = res
                time.sleep(0.1)
        assert last is not None, f"service {service} did not answer in {timeout}s"
        return last
    finally:
        node.destroy_client(client)


# -- the malformed-input set -----------------------------------------------------------------
def image_message(client: Any, h: int, w: int, encoding: str = "rgb8", channels: int = 3) -> Any:
    """A sensor_msgs/Image of random pixels stamped with the client's clock."""
    from sensor_msgs.msg import Image

    msg = Image(height=h, width=w, encoding=encoding, step=w * channels)
    msg.data = np.random.default_rng(h).integers(0, 256, h * w * channels, dtype=np.uint8).tobytes()
    msg.header.stamp = client.get_clock().now().to_msg()
    return msg


def malformed_images(client: Any, size: int = 84) -> list[tuple[str, Any]]:
    """Images a camera driver must never send but a node must survive: (label, message)."""

    def broken(h: int = size, w: int = size, encoding: str = "rgb8", channels: int = 3, **fields: Any) -> Any:
        m = image_message(client, h, w, encoding, channels)
        for k, v in fields.items():
            setattr(m, k, v)
        return m

    return [
        ("wrong encoding", broken(encoding="16UC1")),
        ("step shorter than a row", broken(step=10)),
        ("truncated data", broken(data=bytes(size * size * 3 // 2))),
        ("zero size", broken(height=0, width=0, step=0, data=b"")),
        ("huge size", broken(8, 8, height=60000, width=60000, step=180000)),
        ("step vs encoding", broken(encoding="mono8", channels=1, step=size * 3)),
    ]


class JointStateStream:
    """Publishes joint states at ~100 Hz from a thread; `values` may be changed meanwhile."""

    def __init__(self, client: Any, publisher: Any, names: Sequence[str], values: Sequence[float]) -> None:
        self.client, self.publisher, self.names = client, publisher, list(names)
        self.values = list(values)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from sensor_msgs.msg import JointState

        while not self._stop.is_set():
            js = JointState(name=self.names, position=[float(v) for v in self.values])
            js.header.stamp = self.client.get_clock().now().to_msg()
            self.publisher.publish(js)
            time.sleep(0.01)

    def __enter__(self) -> JointStateStream:
        self._thread.start()
        # A node's subscription can match this publisher well after its image subscription
        # did (discovery runs per topic): wait for it, or the first states are published to no one.
        if not wait_for(lambda: self.publisher.get_subscription_count() > 0, 30):
            self.__exit__()
            raise AssertionError(f"no subscriber on {self.publisher.topic_name} within 30 s "
                                 "(is the node up and listening to joint states?)")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def send_malformed_inputs(client: Any, image_pub: Any, joints: JointStateStream | None,
                          size: int = 84, burst: int = 1000) -> int:
    """policy_node's attack sequence: good frames, every malformed image, a large valid frame,
    NaN joint states (when `joints` is given), a `burst` of frames at 1 kHz, good frames again.
    Returns how many inputs the node must reject (malformed images, plus one NaN-state frame
    at least)."""
    for _ in range(5):
        image_pub.publish(image_message(client, size, size))
        time.sleep(0.03)
    bad = malformed_images(client, size)
    for _, msg in bad:
        image_pub.publish(msg)
        time.sleep(0.05)
    image_pub.publish(image_message(client, 1080, 1920, "bgr8"))  # large but valid
    time.sleep(0.1)
    n_reject = len(bad)
    if joints is not None:
        good = list(joints.values)
        joints.values = [float("nan")] + good[1:]
        time.sleep(0.05)
        for _ in range(3):
            image_pub.publish(image_message(client, size, size))
            time.sleep(0.03)
        joints.values = good
        time.sleep(0.05)
        n_reject += 1
    for _ in range(burst):
        image_pub.publish(image_message(client, size, size))
        time.sleep(0.001)
    for _ in range(5):
        image_pub.publish(image_message(client, size, size))
        time.sleep(0.03)
    return n_reject


# -- fault injection ---------------------------------------------------------------------------
def small_disk_prefix(directory: str | os.PathLike, size_mb: int, filler_mb: int) -> list[str] | None:
    """A NodeProcess prefix giving the node a disk of `size_mb` at `directory` (a tmpfs in a
    private mount namespace; other processes see it as /proc/<pid>/root/<directory>), of which
    a file `filler` takes `filler_mb`: deleting it frees the space. None where this machine
    does not allow mount namespaces (not root, no unshare)."""
    import shutil

    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    if probe.returncode != 0:
        return None
    script = (f'mount -t tmpfs -o size={int(size_mb)}m tmpfs "$0" && dd if=/dev/zero of="$0/filler" bs=1M count={int(filler_mb)} '
              '2>/dev/null && exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(directory)]


def make_failing_policy(src: str | os.PathLike, dst: str | os.PathLike, trigger: int = 255) -> Path:
    """A copy of the exported policy `src` whose inference fails inside onnxruntime (a Reshape
    to an impossible shape, as a numerical or provider fault would) on every frame whose
    pixels are all `trigger` (e.g. an all-white image), and works as `src` on every other
    frame. Injects inference failures on live frames from outside the node."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    g = model.graph
    action = next(o for o in g.output if o.name == "action")
    dims = action.type.tensor_type.shape.dim
    n_actions = int(dims[-1].dim_value)
    for node in g.node:  # the original action is renamed; the fault sits between it and the output
        node.output[:] = ["action_unfaulted" if o == "action" else o for o in node.output]
    g.node.extend([
        helper.make_node("Cast", ["image"], ["fault_image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMin", ["fault_image_f"], ["fault_min"], keepdims=0),
        helper.make_node("Constant", [], ["fault_trigger"], value=helper.make_tensor(
            "fault_trigger_v", TensorProto.FLOAT, [], [float(trigger)])),
        helper.make_node("Equal", ["fault_min", "fault_trigger"], ["fault_on"]),
        helper.make_node("Constant", [], ["fault_good"], value=helper.make_tensor(
            "fault_good_v", TensorProto.INT64, [2], [-1, n_actions])),
        helper.make_node("Constant", [], ["fault_bad"], value=helper.make_tensor(
            "fault_bad_v", TensorProto.INT64, [1], [n_actions + 1])),
        helper.make_node("Where", ["fault_on", "fault_bad", "fault_good"], ["fault_shape"]),
        helper.make_node("Reshape", ["action_unfaulted", "fault_shape"], ["action"]),
    ])
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst
