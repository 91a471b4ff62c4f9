"""pool.py on the kept results of 31 and 37 reproduces the README's pooled numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.studyutil import load_script

HERE = Path(__file__).resolve().parent
RUNS = [HERE.parent / "31-pixel-uncertainty-random-heavy" / "results.json", HERE / "results.json"]


def test_pool_gives_the_readme_numbers():
    pool = load_script(__file__, "pool")
    rep = pool.pool([json.loads(p.read_text()) for p in RUNS])
    assert rep["units"] == 30
    assert [round(r["merpo - merpo_no_uncertainty"]["mean"], 2) for r in rep["per_run"]] == [-0.07, 0.06]
    d = rep["paired"]["merpo - merpo_no_uncertainty"]
    assert round(d["mean"], 2) == -0.01 and d["low"] < 0 < d["high"]  # no effect either way
    assert json.loads((HERE / "pool.json").read_text()) == json.loads(json.dumps(rep))


def test_runs_on_other_logs_are_refused():
    pool = load_script(__file__, "pool")
    a, b = (json.loads(p.read_text()) for p in RUNS)
    next(u for u in b["behaviour_units"] if u["quality"] == "random_heavy")["success_rate"] += 0.2
    with pytest.raises(ValueError, match="held-out random-heavy logs differ"):
        pool.pool([a, b])
