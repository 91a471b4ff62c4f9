"""Helpers for tests that create rclpy nodes: own context, executor in a daemon thread,
teardown that never hangs (docs/environment.md, the in-process pattern). They live in
`robot_nodes.testing`, shared with `vmerpo bench faults`."""

from __future__ import annotations

from robot_nodes.testing import ros_context, wait_for

__all__ = ["ros_context", "wait_for"]
