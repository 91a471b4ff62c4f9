"""Helpers for tests that create rclpy nodes: own context, executor in a daemon thread,
teardown that never hangs (ENVIRONMENT.md's in-process pattern)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


@contextmanager
def ros_context(*node_names: str):
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = [rclpy.create_node(name, context=ctx) for name in node_names]
    executor = MultiThreadedExecutor(context=ctx)
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


def wait_for(predicate, timeout: float = 10.0, period: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()
