"""`vmerpo demo --config tiny` end to end (slow, ~5 min on 2 cores): every step of the real
demo plan runs (collection with random hand starts, MerPO v2 training, MerPO v2 and BC adapted
to each held-out task, export, direct and ROS 2 evaluation, the comparison), and the report
holds the comparison of every task and the direct-vs-ROS 2 agreement. The tiny preset's
numbers mean nothing; `make demo` runs the `demo` preset (experiments/14-demo)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.vmerpo.conftest import ROOT
from vmerpo.commands.demo import COMPARE_METHODS, HELDOUT_TASKS


@pytest.mark.slow
@pytest.mark.ros
def test_the_demo_runs_every_step_and_reports_the_comparison(tmp_path):
    pytest.importorskip("rclpy", reason="the demo's ROS 2 evaluation needs the ROS 2 wheels")
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "vmerpo", "demo", "--config", "tiny", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = json.loads((out / "report.json").read_text())["steps"]
    assert steps and all(s["status"] == "ok" for s in steps), [(s["step"], s["status"]) for s in steps]
    compared = [s for s in steps if s["step"].startswith("compare: ")]
    assert len(compared) == len(HELDOUT_TASKS) * len(COMPARE_METHODS)
    for s in compared:
        assert 0.0 <= s["result"]["success_rate"] <= 1.0 and s["result"]["episodes"] == 20
    md = (out / "report.md").read_text()
    for task in HELDOUT_TASKS:
        assert any(line.startswith(f"| {task} | ") for line in md.splitlines()), task
    assert "| MerPO v2 minus BC (the log alone) | **" in md
    assert "10/10 identical" in md  # the direct and the ROS 2 evaluation, episode by episode
    assert (out / "policy.onnx").exists() and (out / "compare.png").exists()
