"""Network safety for every process that uses ROS 2 (mandatory; docs/environment.md).

Fast DDS multicasts on every interface by default, and LOCALHOST discovery still binds UDP on
all interfaces. The only configuration that opens no IP socket at all is shared-memory
transport only: the builtin-transport switch *and* an XML profile without builtin transports.
`safe_ros_env()` returns that environment; it must be in place before rclpy is imported
(Fast DDS reads it when the first participant is created, but we refuse to guess).

Imports neither rclpy nor torch, so tests and launchers can apply it first.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path

FASTDDS_PROFILE = Path(__file__).with_name("fastdds_shm_only.xml")

_UNSAFE = (
    "ROS_LOCALHOST_ONLY",
    "ROS_STATIC_PEERS",
    "ROS_DISCOVERY_SERVER",
    "ROS_SUPER_CLIENT",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
)


def safe_ros_env(base: Mapping[str, str] | None = None, domain_id: int | None = None) -> dict[str, str]:
    """A copy of `base` (default: os.environ) with the SHM-only Fast DDS configuration."""
    env = dict(os.environ if base is None else base)
    for key in _UNSAFE:
        env.pop(key, None)
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["FASTDDS_BUILTIN_TRANSPORTS"] = "SHM"  # exact spelling; a typo silently means UDP
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"  # never LOCALHOST with Fast DDS
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    elif not env.get("ROS_DOMAIN_ID"):
        # SHM discovery is host-wide: separate concurrent runs by domain.
        env["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    if not env.get("ROS_HOME"):
        env["ROS_HOME"] = tempfile.mkdtemp(prefix="vmerpo-ros-")
    env.setdefault("ROS_LOG_DIR", str(Path(env["ROS_HOME"]) / "log"))
    return env


def apply_safe_ros_env(domain_id: int | None = None) -> dict[str, str]:
    """Put the SHM-only configuration into this process's environment (before rclpy)."""
    env = safe_ros_env(domain_id=domain_id)
    os.environ.clear()
    os.environ.update(env)
    return env


def check_safe_ros_env(env: MutableMapping[str, str] | None = None) -> None:
    """Raise RuntimeError unless the environment holds the SHM-only configuration."""
    env = os.environ if env is None else env
    problems = []
    if env.get("FASTDDS_BUILTIN_TRANSPORTS") != "SHM":
        problems.append("FASTDDS_BUILTIN_TRANSPORTS is not SHM")
    profile = env.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    if not profile or not Path(profile).is_file():
        problems.append("FASTDDS_DEFAULT_PROFILES_FILE does not name the SHM-only profile")
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        problems.append(f"RMW_IMPLEMENTATION is {env.get('RMW_IMPLEMENTATION')}")
    for key in _UNSAFE:
        if env.get(key):
            problems.append(f"{key} is set")
    if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") not in (None, "SYSTEM_DEFAULT"):
        problems.append(f"ROS_AUTOMATIC_DISCOVERY_RANGE={env.get('ROS_AUTOMATIC_DISCOVERY_RANGE')}")
    if problems:
        raise RuntimeError(
            "unsafe ROS 2 network configuration (" + "; ".join(problems) + "): start through "
            "`vmerpo launch` or call robot_nodes.netsafe.apply_safe_ros_env() before importing rclpy"
        )


def ensure_safe_before_rclpy() -> None:
    """For node entry points: apply the config if rclpy is not loaded yet, else verify it."""
    if "rclpy" in sys.modules:
        check_safe_ros_env()
    else:
        try:
            check_safe_ros_env()
        except RuntimeError:
            apply_safe_ros_env()


def inet_sockets_of_this_process() -> list[tuple[str, str, int]]:
    """IP sockets (TCP/UDP/raw, v4/v6) held by this process, from /proc."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("udp", "udp6", "tcp", "tcp6", "raw", "raw6"):
        try:
            with open(f"/proc/self/net/{proto}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[9] in inodes:
                addr, port = cols[1].split(":")
                found.append((proto, addr, int(port, 16)))
    return found


def assert_no_inet_sockets() -> None:
    sockets = inet_sockets_of_this_process()
    assert not sockets, f"ROS middleware opened IP sockets (unsafe network config): {sockets}"
