"""rac_ceiling.py (this folder): RAC on the oracle state or the latents from a small log, then
one closed-loop MuJoCo episode per policy (a few updates here: the wiring, not the numbers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.studyutil import load_script

rac_ceiling = load_script(__file__, "rac_ceiling")


def test_features_scale_the_state_and_leave_raw_latents_alone():
    rng = np.random.default_rng(0)
    feat, state = rng.normal(3.0, 2.0, (50, 6)), rng.normal(-1.0, 5.0, (50, 3))
    x, mean, std = rac_ceiling.features("latent+state", feat, state)
    assert x.shape == (50, 9)
    assert np.all(mean[:6] == 0) and np.all(std[:6] == 1)  # latents as the benchmark uses them
    assert np.allclose(((x - mean) / std)[:, 6:].mean(0), 0, atol=1e-6)  # the state z-scored
    x, mean, std = rac_ceiling.features("latent-norm", feat, state)
    assert np.allclose(((x - mean) / std).mean(0), 0, atol=1e-6)
    x, _, _ = rac_ceiling.features("state", None, state)
    assert x is state


def test_oracle_state_runs_end_to_end_and_reports_the_log(tmp_path):
    from learning.store import EpisodeStore
    from sim.collect import CollectConfig, collect

    store = tmp_path / "log.zarr"
    collect(CollectConfig(family="reach-v3", out=str(store), tasks=[40], episodes_per_task=2,
                          quality="medium", workers=0), progress=False, log=lambda m: None)
    out = tmp_path / "ceiling.json"
    assert rac_ceiling.main(["--data", str(store), "--features", "state", "--lam", "5,50", "--steps", "3",
                             "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [(r["task"], r["lam"]) for r in res["rows"]] == [(40, 5.0), (40, 50.0)]
    assert all(r["success"] in (0.0, 1.0) and np.isfinite(r["return"]) for r in res["rows"])
    assert res["summary"]["log"]["success"] == float(EpisodeStore.open(str(store)).episode_success.mean())
    assert set(res["summary"]) == {"state lam=5", "state lam=50", "log"}


def test_latent_features_need_a_world_model(capsys):
    with pytest.raises(SystemExit):
        rac_ceiling.main(["--data", "x.zarr", "--features", "latent"])
    assert "need --world-model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rac_ceiling.main(["--data", "x.zarr", "--features", "pixels"])
    assert "unknown features" in capsys.readouterr().err
