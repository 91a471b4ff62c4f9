"""The world-model benchmark's statistics and a tiny end-to-end run on synthetic stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.benchmarks.benchutil import world_model_bench_inputs
from vmerpo.benchmarks.world_model import auroc, main, paired_auroc, spearman


def test_spearman_and_auroc():
    x = np.arange(20.0)
    assert spearman(x, x**3) > 0.999 and spearman(x, -x) < -0.999
    assert auroc(np.zeros(5), np.ones(5)) == 1.0
    assert auroc(np.ones(5), np.zeros(5)) == 0.0
    rng = np.random.default_rng(0)
    assert abs(auroc(rng.normal(size=2000), rng.normal(size=2000)) - 0.5) < 0.05
    # paired: a per-state offset that swamps the pooled AUROC leaves the pairs' order intact
    base = rng.normal(scale=10.0, size=2000)
    assert paired_auroc(base, base + 0.1) == 1.0 and paired_auroc(base + 0.1, base) == 0.0
    assert auroc(base, base + 0.1) < 0.6
    assert paired_auroc(np.ones(4), np.ones(4)) == 0.5


def test_benchmark_runs_end_to_end_on_tiny(tmp_path):
    world_model_bench_inputs(tmp_path, [5], 6, steps=6)
    out = tmp_path / "b.json"
    assert main(["--family", "syn", str(tmp_path / "train.zarr"), str(tmp_path / "test.zarr"),
                 "--config", str(tmp_path / "c.json"), "--adapt-steps", "4", "--horizon", "3",
                 "--ood-horizon", "5", "--eta-select", "0,1e-2", "--adapt-heads", "all,reward_offset",
                 "--workdir", str(tmp_path / "w"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())["syn"]
    for key in ("uncertainty_error_spearman", "ood_action_auroc", "adapted_over_meta_loss_ratio",
                "adapted_over_scratch_loss_ratio", "adapted_over_meta_image_loss_ratio",
                "train_steps_per_s", "data_wait_share"):
        assert np.isfinite(res[key]), key
    assert 0 <= res["ood_action_auroc"] <= 1 and 0 <= res["ood_action_auroc_paired"] <= 1
    assert res["uncertainty_plot"] == str(tmp_path / "b_syn_uncertainty.png")
    assert (tmp_path / "b_syn_uncertainty.png").stat().st_size > 10_000  # both panels drawn
    assert res["ood_horizon"] == 5 and res["eta"] == "selected"
    assert all(r["eta"] in (0.0, 1e-2) and set(r["eta_validation"]) == {"0", "0.01"} for r in res["meta_tasks"])
    assert res["eta_rule"] == "best" and np.isfinite(res["adapted_over_meta_loss_ratio_rule_1se"])
    assert all(r["eta"] == r["eta_by_rule"]["best"] for r in res["meta_tasks"])
    # the second --adapt-heads entry: selected and scored beside the headline
    assert res["adapt_heads"] == ["all", "reward_offset"]
    assert all(r["eta_heads_reward_offset"] in (0.0, 1e-2) for r in res["meta_tasks"])
    for key in ("adapted_over_meta_loss_ratio_heads_reward_offset", "adapted_over_scratch_loss_ratio_heads_reward_offset",
                "adapted_over_meta_image_loss_ratio_heads_reward_offset"):
        assert np.isfinite(res[key]), key
    with pytest.raises(SystemExit):  # a bad name: argparse's one-line error
        main(["--family", "syn", "a", "b", "--adapt-heads", "all,prior"])
    out2 = tmp_path / "b2.json"  # uncertainty checks alone, on the run just trained
    assert main(["--family", "syn", str(tmp_path / "train.zarr"), str(tmp_path / "test.zarr"), "--run", res["run"],
                 "--horizon", "3", "--ood-horizon", "5", "--no-meta", "--workdir", str(tmp_path / "w"), "--out", str(out2)]) == 0
    res2 = json.loads(out2.read_text())["syn"]
    assert "adapted_over_meta_loss_ratio" not in res2
    # the prior heads refit first (the bench preset's random priors reading the action)
    out3 = tmp_path / "b3.json"
    assert main(["--family", "syn", str(tmp_path / "train.zarr"), str(tmp_path / "test.zarr"), "--run", res["run"],
                 "--horizon", "3", "--no-meta", "--refit-heads", "5", "--refit-action-gain", "2",
                 "--workdir", str(tmp_path / "w"),
                 "--out", str(out3)]) == 0
    res3 = json.loads(out3.read_text())["syn"]
    assert res3["refit_heads"]["steps"] == 5 and res3["refit_heads"]["context_scale"] == 30.0
    assert res3["refit_heads"]["random_action_gain"] == 2.0
    assert np.isfinite(res3["uncertainty_error_spearman"]) and 0 <= res3["ood_action_auroc"] <= 1
    assert res2["uncertainty_error_spearman"] == res["uncertainty_error_spearman"]  # same seed, same model


def test_action_separability_is_high_for_narrow_actions_and_chance_for_uniform_ones():
    from vmerpo.benchmarks.world_model import action_separability
    rng = np.random.default_rng(0)
    lo, hi = -np.ones(2), np.ones(2)

    def eps(narrow: bool, n: int = 4) -> list[dict[str, np.ndarray]]:
        out = []
        for _ in range(n):
            s = rng.normal(size=(100, 3)).astype(np.float32)
            a = (np.tanh(s[:, :2]) * 0.5 + 0.05 * rng.normal(size=(100, 2)) if narrow
                 else rng.uniform(-1, 1, (100, 2))).astype(np.float32)
            out.append({"state": s, "action": a})
        return out

    assert action_separability(eps(True), eps(True), lo, hi, 0, steps=400) > 0.8
    assert abs(action_separability(eps(False), eps(False), lo, hi, 0, steps=400) - 0.5) < 0.1


def test_eta_is_selected_by_leave_one_episode_out_on_the_adaptation_episodes(tiny_synthetic_model):
    from learning.store import EpisodeStore
    from vmerpo.benchmarks.world_model import select_eta

    store, model = tiny_synthetic_model(episodes=3, length=16)
    grid = [0.0, 1e6, float("inf")]
    best, info = select_eta(model, EpisodeStore.open(store), [0, 1, 2], grid, horizon=2, adapt_steps=3, seed=0)
    scores = info["scores"]
    assert best in grid and set(scores) == {"0", "1e+06", "inf"}
    assert all(np.isfinite(v) for v in scores.values())
    assert all(len(v) == 3 for v in info["per_episode"].values())  # one loss per left-out episode
    assert scores[f"{best:g}"] == min(scores.values()) and info["best"] == best
    # the one-standard-error rule: the largest eta within one SE of the minimum, never below the best
    one_se, _ = select_eta(model, EpisodeStore.open(store), [0, 1, 2], grid, horizon=2, adapt_steps=3, seed=0,
                           rule="1se")
    assert one_se == info["1se"] >= best
    assert scores[f"{one_se:g}"] <= scores[f"{best:g}"] + info["se_at_best"]
    assert all(scores[f"{e:g}"] > scores[f"{best:g}"] + info["se_at_best"] for e in grid if e > one_se)
    with pytest.raises(ValueError, match="unknown eta rule"):
        select_eta(model, EpisodeStore.open(store), [0, 1, 2], grid, horizon=2, adapt_steps=3, seed=0, rule="median")
