"""Set-up for the study tests under experiments/ (not collected by `make test`, whose testpaths
is tests/; run them with `.venv/bin/python -m pytest experiments -m ""` from the repository root).

As tests/conftest.py: the repository root on sys.path, the SHM-only Fast DDS configuration
applied before anything can import rclpy, MuJoCo rendering on EGL unless set; and the
`world_model_bench_inputs` fixture. Each test loads its study script from its own folder with
`experiments.studyutil.load_script` (the NN-slug folders are not packages)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from robot_nodes.netsafe import apply_safe_ros_env  # noqa: E402

assert "rclpy" not in sys.modules, "rclpy was imported before the safe DDS config was applied"
apply_safe_ros_env()
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def world_model_bench_inputs():
    """`world_model_bench_inputs(tmp_path, test_tasks, test_episodes, steps) -> config path`."""
    from tests.benchmarks.benchutil import world_model_bench_inputs as inputs

    return inputs
