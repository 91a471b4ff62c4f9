"""`vmerpo inspect`: summary, JSON keys, plot and video; damaged stores -> exit 2, one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.learning.storeutil import make_store
from tests.learning.test_store import _damage

ROOT = Path(__file__).resolve().parents[2]


def vmerpo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmerpo", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_inspect_json_plot_and_video(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=6)
    plot, video = tmp_path / "sheet.png", tmp_path / "eps.mp4"
    proc = vmerpo("inspect", str(path), "--json", "--plot", str(plot), "--video", str(video),
                  "--episodes", "0,3")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["episodes"] == 6 and summary["image_shape"] == [16, 16, 3]
    assert summary["frames"] == sum(10 + k % 7 for k in range(6))
    assert summary["success_rate"] == pytest.approx(0.5)
    assert set(summary["tasks"]) == {"0", "1", "2"} and summary["tasks"]["1"]["episodes"] == 2
    assert summary["per_quality"]["expert"]["success_rate"] == 1.0
    assert summary["compression_ratio"] > 0
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[0] > 100
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["video_frames"] == 10 + 13
    human = vmerpo("inspect", str(path))
    assert human.returncode == 0 and "6 episodes" in human.stdout and "task2" in human.stdout


@pytest.mark.parametrize("how", ["lengths", "nan", "missing", "truncated"])
def test_inspect_refuses_damaged_store(tmp_path, how):
    path = make_store(tmp_path / "s.zarr", n=5)
    name = _damage(path, how)
    proc = vmerpo("inspect", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], proc.stderr


def test_inspect_bad_arguments(tmp_path):
    proc = vmerpo("inspect", str(tmp_path / "nope.zarr"))
    assert proc.returncode == 2 and "no such episode store" in proc.stderr
    path = make_store(tmp_path / "s.zarr", n=2)
    proc = vmerpo("inspect", str(path), "--plot", str(tmp_path / "p.png"), "--episodes", "5")
    assert proc.returncode == 2 and "episode 5 out of range" in proc.stderr
