"""pool.py on the kept results of 31, 37 and 38 reproduces the README's pooled numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.studyutil import load_script

HERE = Path(__file__).resolve().parent
RUNS = [HERE.parent / "31-pixel-uncertainty-random-heavy" / "results.json",
        HERE.parent / "37-pixel-ablations" / "results.json", HERE / "results.json", HERE / "replicate" / "results.json"]


def _runs() -> list[dict]:
    return [json.loads(p.read_text()) for p in RUNS]


def test_pool_gives_the_readme_numbers():
    pool = load_script(__file__, "pool")
    rep = pool.pool(_runs(), [("merpo", "merpo_no_uncertainty"), ("merpo", "merpo_no_uncertainty_meta"),
                              ("merpo_uncertainty_excess", "merpo_no_uncertainty_meta")])
    adapt = rep["merpo - merpo_no_uncertainty"]
    assert adapt["runs"] == [0, 1, 2] and adapt["units"] == 30
    assert [round(d["mean"], 2) for d in adapt["per_run"]] == [-0.07, 0.06, -0.08]
    assert round(adapt["pooled"]["mean"], 2) == -0.03 and adapt["pooled"]["low"] < 0 < adapt["pooled"]["high"]
    assert rep["merpo - merpo_no_uncertainty_meta"]["runs"] == [1, 2]  # 31 did not run it
    excess = rep["merpo_uncertainty_excess - merpo_no_uncertainty_meta"]
    assert excess["runs"] == [2, 3] and [round(d["mean"], 2) for d in excess["per_run"]] == [0.13, 0.10]
    assert round(excess["pooled"]["mean"], 2) == 0.11 and excess["pooled"]["low"] > 0


def test_the_kept_pool_json_is_what_the_readme_command_writes():
    pool = load_script(__file__, "pool")
    kept = json.loads((HERE / "pool.json").read_text())
    runs = [json.loads((HERE.parents[1] / f).read_text()) for f in kept["files"]]
    rep = pool.pool(runs, [tuple(k.split(" - ")) for k in kept["pairs"]], kept["quality"])
    assert json.loads(json.dumps(rep)) == kept["pairs"]


def test_runs_on_other_logs_and_pairs_no_run_holds_are_refused():
    pool = load_script(__file__, "pool")
    a, b, c, _ = _runs()
    with pytest.raises(ValueError, match="no run holds both"):
        pool.pool([a, b], [("merpo_uncertainty_excess", "merpo")])
    next(u for u in c["behaviour_units"] if u["quality"] == "random_heavy")["success_rate"] += 0.2
    with pytest.raises(ValueError, match="held-out random_heavy logs differ"):
        pool.pool([a, b, c], [("merpo", "merpo_no_uncertainty")])
