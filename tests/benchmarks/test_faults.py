"""The fault-injection suite (`vmerpo bench faults`): its summary logic and store-damage cases run
in the default suite; the whole suite with --quick counts is a slow test (~2.5 min here)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
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
    bad["corruption"]["appends_changing_files"] = 1
    s = faults.summarize(bad, faults.FULL)
    assert not s["ok"]
    assert (s["lost_committed_episodes"], s["unrecoverable_runs"], s["policy_node_crashes"],
            s["not_refused_cleanly"], s["appends_changing_files"]) == (3, 1, 1, 3, 1)
    assert "FAILED" in faults.format_table(s)

    short = _clean_sections()
    short["collection"]["trials"] = 19  # below the full suite's 20 trials
    short["training"]["runs"]["world_model"]["kills_after_progress"] = 4
    s = faults.summarize(short, faults.FULL)
    assert not s["ok"] and len(s["problems"]) == 2
    assert faults.summarize({"corruption": _clean_sections()["corruption"]}, faults.QUICK)["ok"]


def _alarm(signum, frame):
    raise TimeoutError("hung (a FIFO or device read?)")


def test_every_store_damage_is_refused_in_one_line_naming_the_problem(tmp_path):
    """Every STORE_CASES damage through EpisodeStore in this process (an alarm turns a hang into
    a failure); the APPEND_CASES also through an EpisodeWriter append, which must change no
    file of the store and none beside it (the victim store a link points into)."""
    from learning.store import EpisodeStore, EpisodeWriter
    from learning.synthetic import synthetic_episode

    assert len(faults.STORE_CASES) >= 28 and set(faults.APPEND_CASES) <= set(faults.STORE_CASES)
    good = faults.make_small_store(tmp_path / "good.zarr")
    EpisodeStore.open(good).verify()
    rng = random.Random(0)
    ep = synthetic_episode(np.random.default_rng(0), 20, 32)
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i, (name, (damage, words)) in enumerate(faults.STORE_CASES.items()):
            path = tmp_path / f"s{i}.zarr"
            shutil.copytree(good, path)
            damage(path, rng)
            signal.alarm(20)
            t0 = time.perf_counter()
            with pytest.raises(ValueError) as info:
                EpisodeStore.open(path, load="lazy").verify()
            seconds = time.perf_counter() - t0
            msg = str(info.value)
            assert "\n" not in msg and faults._check_message(msg, words), (name, msg)
            assert seconds < faults.REFUSAL_BOUND_S, (name, seconds)
            if name in faults.APPEND_CASES:
                before = faults.snapshot(tmp_path)
                with pytest.raises(ValueError) as info:
                    with EpisodeWriter(path, mode="a", log=lambda m: None) as w:
                        w.add_episode(ep, task_id=0, success=True)
                assert faults._check_message(str(info.value), words), (name, str(info.value))
                assert faults.snapshot(tmp_path) == before, name
            signal.alarm(0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_store_damage_is_measured_from_the_outside_and_a_hang_is_a_recorded_failure(tmp_path, monkeypatch):
    """The section's own machinery on a few cases: `vmerpo inspect` and the API probe in
    subprocesses (time, peak RSS), the append probe with its file comparison; an accepted
    damage is not clean; a hung process is killed at the timeout and recorded."""
    monkeypatch.setitem(faults.STORE_CASES, "no damage", (lambda p, r: None, ("data/image",)))
    names = ["1e12 rows declared on data/image", "data/image a symlink to another store's array", "no damage"]
    out = faults.store_damage_cases(tmp_path, random.Random(0), names)
    assert all(out["controls"].values()) and out["startup"]["seconds"] > 0
    rows = {(c["case"], c["tool"]): c for c in out["cases"]}
    assert len(rows) == 2 * len(names) + 2  # inspect and API for each, an append for the first two
    for (case, _), c in rows.items():
        assert c["refused_cleanly"] == (case != "no damage"), c
        assert c["peak_rss_mb"] > 0 and not c["timed_out"], c
    api = rows[("1e12 rows declared on data/image", "EpisodeStore.open+verify")]
    assert api["seconds"] < 1.0 and api["rss_growth_mb"] < 100 and api["traced_peak_mb"] < 100
    app = rows[("data/image a symlink to another store's array", "EpisodeWriter append")]
    assert app["target"] == "append" and app["files_outside"] > 10
    assert app["store_files_changed"] == [] and app["outside_files_changed"] == []
    assert rows[("no damage", "vmerpo inspect")]["exit_code"] == 0
    table = faults.store_damage_markdown(out)
    assert table.count("\n| ") == len(rows) + 1 and "**no**" in table

    # the peak RSS is the child's own, not this (larger) process's carried through fork and exec
    small = faults.run_measured([sys.executable, "-c", "pass"])
    big = faults.run_measured([sys.executable, "-c", "x = bytearray(150 * 2**20); x[::4096] = b'1' * len(x[::4096])"])
    assert small["rc"] == 0 and small["peak_rss_mb"] < 40 and 150 < big["peak_rss_mb"] < 200, (small, big)
    t0 = time.perf_counter()
    hung = faults.run_measured([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert hung["timed_out"] and hung["rc"] == -signal.SIGKILL and time.perf_counter() - t0 < 10


def test_leftover_rows_are_reported_and_repaired_for_a_zarr2_reader(tmp_path):
    good = faults.make_small_store(tmp_path / "good.zarr")
    checks = faults.leftover_repair_checks(tmp_path, good, log=lambda m: None)
    assert [c["case"] for c in checks] == ["writer SIGKILLed mid-episode", "commit cut short (zero tail entry)"]
    for c in checks:
        assert c["ok"], c
        assert c["reader_after_repair"] == "5 episodes"


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
