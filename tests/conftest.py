"""Test-wide set-up. The SHM-only Fast DDS configuration is applied here, before any test
module can import rclpy, so no test process (or subprocess it starts) opens an IP socket."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from robot_nodes.netsafe import apply_safe_ros_env  # noqa: E402

assert "rclpy" not in sys.modules, "rclpy was imported before the safe DDS config was applied"
apply_safe_ros_env()
os.environ.setdefault("MUJOCO_GL", "egl")
