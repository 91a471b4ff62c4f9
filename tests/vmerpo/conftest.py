"""A policy trained on MuJoCo logs and exported (the `tiny` preset: seconds to a minute),
once per test session: shared by the end-to-end tests of `vmerpo eval` and `vmerpo ros-eval`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = "reach-v3"


def _vmerpo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmerpo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """A directory with run/ (meta-trained on tasks 0-2), adapted/ (to task 41) and policy.onnx."""
    from sim.collect import CollectConfig, collect

    d = tmp_path_factory.mktemp("e2e")
    common = dict(family=ENV, quality="mixed", max_episode_steps=40, workers=0, seed=0)
    collect(CollectConfig(out=str(d / "train.zarr"), tasks=[0, 1, 2], episodes_per_task=2, **common),
            progress=False, log=lambda m: None)
    collect(CollectConfig(out=str(d / "heldout.zarr"), tasks=[41], episodes_per_task=2, **common),
            progress=False, log=lambda m: None)
    for args in (["train", "--data", str(d / "train.zarr"), "--config", "tiny", "--out", str(d / "run"),
                  "--eval-every", "3", "--eval-tasks", "2", "--eval-episodes", "1"],
                 ["adapt", "--run", str(d / "run"), "--data", str(d / "heldout.zarr"), "--out", str(d / "adapted")],
                 ["export", "--run", str(d / "adapted"), "--out", str(d / "policy.onnx"), "--check"]):
        proc = _vmerpo(*args, "--no-progress") if args[0] != "export" else _vmerpo(*args)
        assert proc.returncode == 0, f"{args[0]}: {proc.stderr[-3000:]}"
    return d
