"""refit_sweep.py (this folder): the prior-heads refit's settings chosen on held-out-task
episodes (`select`) and reported on the training tasks' held-out windows (`report`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.studyutil import load_script
from learning.world_model_train import load_config, train

refit_sweep = load_script(__file__, "refit_sweep")


def test_grid_parsing_and_its_errors():
    assert refit_sweep.parse_grid("2:20:6000, 1:0:5") == [{"gain": 2.0, "context": 20.0, "steps": 6000},
                                                          {"gain": 1.0, "context": 0.0, "steps": 5}]
    for bad in ("2:20", "a:1:2", "2:20:1.5", ","):
        with pytest.raises(SystemExit):
            refit_sweep.parse_grid(bad)
    assert refit_sweep.margin({"uncertainty_error_spearman": 0.6, "ood_action_auroc": 0.85}) == pytest.approx(0.05)
    assert refit_sweep.margin({"uncertainty_error_spearman": 0.4, "ood_action_auroc": 0.95}) == pytest.approx(-0.1)


def test_sweep_runs_and_chooses_by_the_select_margin(tmp_path, world_model_bench_inputs):
    config = world_model_bench_inputs(tmp_path, [5, 6], 4, steps=4)
    run = tmp_path / "run"
    train(str(tmp_path / "train.zarr"), load_config(str(config)), str(run), overwrite=True,
          progress=False, log=lambda m: None)
    out = tmp_path / "s.json"
    assert refit_sweep.main(["--run", str(run), "--train", str(tmp_path / "train.zarr"), "--test",
                             str(tmp_path / "test.zarr"), "--grid", "1:30:3,2:10:3", "--select-episodes", "2",
                             "--horizon", "3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["select_episodes"]) == 4  # 2 per held-out task
    rows = res["rows"]
    assert [(r["gain"], r["context"], r["steps"]) for r in rows] == [(1.0, 30.0, 3), (2.0, 10.0, 3)]
    for r in rows:
        assert r["refit"]["steps"] == 3 and np.isfinite(r["refit"]["kl"])
        for part in ("select", "report"):
            assert 0 <= r[part]["ood_action_auroc"] <= 1 and np.isfinite(r[part]["uncertainty_error_spearman"])
        assert r["select_margin"] == pytest.approx(refit_sweep.margin(r["select"]))
    best = max(rows, key=lambda r: r["select_margin"])
    assert res["chosen"] == {k: best[k] for k in ("gain", "context", "steps")}
