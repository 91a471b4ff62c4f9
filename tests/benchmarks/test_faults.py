"""The fault-injection suite (`vmerpo bench faults`): its summary logic and store-damage cases run
in the default suite; the whole suite with --quick counts is a slow test (~2.5 min here)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import pytest

from vmerpo.benchmarks import faults
from vmerpo.benchmarks.faults import ROOT


def _clean_sections() -> dict:
    run = {"kills_after_progress": 5, "kills_blind": 2, "recovered": True}
    return {
        "training": {"runs": {"world_model": dict(run), "merpo": dict(run)}},
        "collection": {"trials": 20, "lost_committed_episodes": 0, "corrupted_episodes": 0,
                       "unopenable_stores": 0, "orphan_workers": 0, "final_identical_to_uninterrupted": True,
                       "errors": []},
        "recording": {"trials": 20, "lost_committed_episodes": 0, "changed_episodes": 0,
                      "misaligned_episodes": 0, "unopenable_stores": 0, "network_violations": 0, "errors": []},
        "corruption": {"refused_with_one_line_error": 52, "not_refused_cleanly": 0,
                       "controls": {"inspect good store": True, "eval good policy": True}},
        "ros": {"trials": 3, "policy_node_crashes": 0, "unclean_exits": 0, "nonfinite_commands": 0,
                "out_of_limit_commands": 0, "rejections_missing": 0, "network_violations": 0, "errors": []},
    }


def test_summary_is_ok_only_when_every_count_is_zero_and_minimums_are_met():
    s = faults.summarize(_clean_sections(), faults.FULL)
    assert s["ok"] and s["problems"] == []
    for key in ("lost_committed_episodes", "unrecoverable_runs", "policy_node_crashes", "not_refused_cleanly"):
        assert s[key] == 0
    assert s["refused_with_one_line_error"] == 52 and s["training_kills"] == 14
    table = faults.format_table(s)
    assert "lost committed episodes" in table and table.rstrip().endswith("OK")

    bad = _clean_sections()
    bad["recording"]["lost_committed_episodes"] = 1
    bad["collection"]["lost_committed_episodes"] = 2
    bad["training"]["runs"]["merpo"]["recovered"] = False
    bad["ros"]["policy_node_crashes"] = 1
    bad["corruption"]["not_refused_cleanly"] = 3
    s = faults.summarize(bad, faults.FULL)
    assert not s["ok"]
    assert (s["lost_committed_episodes"], s["unrecoverable_runs"], s["policy_node_crashes"],
            s["not_refused_cleanly"]) == (3, 1, 1, 3)
    assert "FAILED" in faults.format_table(s)

    short = _clean_sections()
    short["collection"]["trials"] = 19  # below the minimum of 20
    short["training"]["runs"]["world_model"]["kills_after_progress"] = 4
    s = faults.summarize(short, faults.FULL)
    assert not s["ok"] and len(s["problems"]) == 2
    assert faults.summarize({"corruption": _clean_sections()["corruption"]}, faults.QUICK)["ok"]


def test_every_store_damage_is_refused_in_one_line_naming_the_problem(tmp_path):
    from learning.store import EpisodeStore

    good = faults.make_small_store(tmp_path / "good.zarr")
    EpisodeStore.open(good).verify()
    rng = random.Random(0)
    for i, (name, (damage, words)) in enumerate(faults.STORE_CASES.items()):
        path = tmp_path / f"s{i}.zarr"
        shutil.copytree(good, path)
        damage(path, rng)
        with pytest.raises(ValueError) as info:
            EpisodeStore.open(path, load="lazy").verify()
        msg = str(info.value)
        assert "\n" not in msg and faults._check_message(msg, words), (name, msg)


def test_one_line_error_and_metric_comparison():
    assert faults.one_line_error("vmerpo inspect: error: x is bad\n") == (True, "vmerpo inspect: error: x is bad")
    assert not faults.one_line_error("Traceback (most recent call last):\n  ...\nValueError: x\n")[0]
    assert faults.metrics_diff({"loss": 2.0}, {"loss": 2.0}) == 0.0
    assert faults.metrics_diff({"loss": 2.0}, {"loss": 2.2}) == pytest.approx(0.1)
    assert faults.metrics_diff({"loss": 2.0}, {"kl": 2.0}) == float("inf")


@pytest.mark.slow
@pytest.mark.ros
def test_quick_fault_suite_finds_nothing(tmp_path):
    out = tmp_path / "faults.json"
    proc = subprocess.run([sys.executable, "-m", "vmerpo", "bench", "faults", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())["summary"]
    for key in ("lost_committed_episodes", "corrupted_committed_episodes", "unopenable_stores",
                "orphan_workers", "unrecoverable_runs", "policy_node_crashes", "unsafe_commands",
                "not_refused_cleanly", "network_violations"):
        assert s[key] == 0, (key, s["problems"])
    assert s["refused_with_one_line_error"] > 0 and s["training_kills"] >= 6
    assert proc.returncode == 0 and s["ok"], s["problems"]
