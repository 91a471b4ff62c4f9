"""Set-up for the study tests under experiments/ (not collected by `make test`, whose testpaths
is tests/; run them with `.venv/bin/python -m pytest experiments -m ""` from the repository root).

As tests/conftest.py: the repository root on sys.path, the SHM-only Fast DDS configuration
applied before anything can import rclpy, MuJoCo rendering on EGL unless set; and the
`world_model_bench_inputs` fixture. Each test loads its study script from its own folder
(importlib.util.spec_from_file_location: the NN-slug folders are not packages)."""

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


def _world_model_bench_inputs(tmp_path: Path, test_tasks: list[int], test_episodes: int, steps: int) -> Path:
    """Synthetic stores for the world-model benchmarks (train.zarr: tasks 0 and 1 x 4 episodes;
    test.zarr: `test_tasks` x `test_episodes`) and a `tiny` config with the bench preset's
    ensemble (action-reading heads, random priors) of `steps` steps; returns the config's path.
    (A copy of tests/benchmarks/benchutil.world_model_bench_inputs.)"""
    import json

    import numpy as np

    from learning.store import EpisodeWriter
    from learning.synthetic import bench_spec, synthetic_episode

    rng = np.random.default_rng(0)
    for name, tasks, n in (("train", [0, 1], 4), ("test", test_tasks, test_episodes)):
        with EpisodeWriter(tmp_path / f"{name}.zarr", bench_spec(32), mode="w", log=lambda m: None) as w:
            for t in tasks:
                for _ in range(n):
                    w.add_episode(synthetic_episode(rng, 20, 32), task_id=t, success=False)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"preset": "tiny", "steps": steps, "holdout_every": 4,
                                  "model": {"prior_action": True, "prior_random_scale": 3.0}}))
    return config


@pytest.fixture
def world_model_bench_inputs():
    """`world_model_bench_inputs(tmp_path, test_tasks, test_episodes, steps) -> config path`."""
    return _world_model_bench_inputs
