"""The SHM-only DDS configuration: nodes talk across processes and hold no IP socket."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from robot_nodes.netsafe import (
    FASTDDS_PROFILE,
    assert_no_inet_sockets,
    check_safe_ros_env,
    inet_sockets_of_this_process,
    safe_ros_env,
)

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy wheels) not installed")
ROOT = Path(__file__).resolve().parents[2]


def test_profile_is_shm_only():
    xml = FASTDDS_PROFILE.read_text()
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in xml
    assert "<type>SHM</type>" in xml and "UDP" not in xml


def test_safe_env_removes_unsafe_settings():
    env = safe_ros_env({"ROS_LOCALHOST_ONLY": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                        "FASTRTPS_DEFAULT_PROFILES_FILE": "/x.xml"})
    assert "ROS_LOCALHOST_ONLY" not in env and "FASTRTPS_DEFAULT_PROFILES_FILE" not in env
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SYSTEM_DEFAULT"
    assert env["FASTDDS_BUILTIN_TRANSPORTS"] == "SHM"
    check_safe_ros_env(env)
    with pytest.raises(RuntimeError, match="FASTDDS_BUILTIN_TRANSPORTS"):
        check_safe_ros_env({**env, "FASTDDS_BUILTIN_TRANSPORTS": "SHM_"})


def test_socket_detector_sees_an_ip_socket():
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        assert any(proto == "udp" for proto, _, _ in inet_sockets_of_this_process())
    finally:
        s.close()


PUBLISHER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from robot_nodes.netsafe import check_safe_ros_env, assert_no_inet_sockets
    check_safe_ros_env()
    import rclpy
    from std_msgs.msg import String
    rclpy.init()
    node = rclpy.create_node("netsafe_pub")
    pub = node.create_publisher(String, "netsafe_chatter", 10)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    for i in range(20):
        pub.publish(String(data=f"hello {{i}}"))
        rclpy.spin_once(node, timeout_sec=0.05)
    assert_no_inet_sockets()
    print("publisher ok", flush=True)
    node.destroy_node()
    rclpy.shutdown()
""")


def test_two_processes_talk_over_shm_without_ip_sockets(tmp_path):
    from std_msgs.msg import String

    from tests.rosutil import ros_context, wait_for

    received: list[str] = []
    with ros_context("netsafe_sub") as (_, _, (node,)):
        node.create_subscription(String, "netsafe_chatter", lambda m: received.append(m.data), 10)
        script = tmp_path / "pub.py"
        script.write_text(PUBLISHER.format(root=str(ROOT)))
        proc = subprocess.run([sys.executable, str(script)], env=dict(os.environ),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "publisher ok" in proc.stdout
        assert wait_for(lambda: len(received) > 0, timeout=5)
        assert_no_inet_sockets()
    assert received[0].startswith("hello")
