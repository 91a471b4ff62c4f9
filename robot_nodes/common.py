"""What every vmerpo node's `main` does: the SHM-only DDS config before rclpy, a check that
no IP socket was opened, a spin loop that ends cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from robot_nodes.netsafe import ensure_safe_before_rclpy, inet_sockets_of_this_process

ensure_safe_before_rclpy()

import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402


def declare(node: Any, name: str, default: Any, description: str = "") -> Any:
    """Declare a parameter and return its value. `default` may be a Parameter.Type for an
    optional array parameter with no default; then the value is None when it is unset."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterUninitializedException

    node.declare_parameter(name, default, ParameterDescriptor(description=description))
    try:
        value = node.get_parameter(name).value
    except ParameterUninitializedException:
        return None
    return list(value) if isinstance(default, Parameter.Type) and value is not None else value


def make_executor():
    """One thread for all of a node's callbacks (no locking needed): rclpy's C++-backed
    EventsExecutor, which costs far less per callback than the Python executors, unless
    VMERPO_ROS_EXECUTOR=single asks for the SingleThreadedExecutor."""
    import os

    if os.environ.get("VMERPO_ROS_EXECUTOR", "events") == "single":
        return SingleThreadedExecutor()
    from rclpy.experimental import EventsExecutor

    return EventsExecutor()


def run_node(make_node: Callable[[], Any], args: Sequence[str] | None = None) -> int:
    """Spin one node until shutdown; exit code 0, or 3 if the middleware opened an IP socket."""
    from rclpy.signals import SignalHandlerOptions

    # Our own SIGINT/SIGTERM handling: the context stays alive after the signal so the node
    # can still publish its last message (the policy node's hold command) before exiting.
    rclpy.init(args=list(sys.argv if args is None else args),
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    node = None
    code = 0
    try:
        node = make_node()
        sockets = inet_sockets_of_this_process()
        if sockets:
            node.get_logger().fatal(f"the ROS middleware opened IP sockets {sockets}: unsafe network "
                                    "configuration, refusing to run (see robot_nodes/netsafe.py)")
            return 3
        executor = make_executor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # a node that cannot start says why in one line
        print(f"{getattr(node, 'get_name', lambda: 'node')()}: fatal: {e}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            if stopped_by:  # the node may record why it stops (recorder_node: how a take ended)
                node.stopped_by = stopped_by[0]
            shutdown = getattr(node, "on_process_exit", None)
            if shutdown is not None:
                try:
                    shutdown()
                except Exception as e:  # best effort on the way out
                    print(f"shutdown hook failed: {e}", file=sys.stderr)
            node.destroy_node()
        rclpy.try_shutdown()
    return code
