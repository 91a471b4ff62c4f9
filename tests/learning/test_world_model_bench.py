"""The world-model benchmark's statistics and a tiny end-to-end run on synthetic stores."""

from __future__ import annotations

import json

import numpy as np

from learning.benchmarks.store import bench_spec, synthetic_episode
from learning.benchmarks.world_model import auroc, main, spearman
from learning.store import EpisodeWriter


def test_spearman_and_auroc():
    x = np.arange(20.0)
    assert spearman(x, x**3) > 0.999 and spearman(x, -x) < -0.999
    assert auroc(np.zeros(5), np.ones(5)) == 1.0
    assert auroc(np.ones(5), np.zeros(5)) == 0.0
    rng = np.random.default_rng(0)
    assert abs(auroc(rng.normal(size=2000), rng.normal(size=2000)) - 0.5) < 0.05


def test_benchmark_runs_end_to_end_on_tiny(tmp_path):
    rng = np.random.default_rng(0)
    for name, tasks, n in (("train", [0, 1], 4), ("test", [5], 6)):
        with EpisodeWriter(tmp_path / f"{name}.zarr", bench_spec(32), mode="w", log=lambda m: None) as w:
            for t in tasks:
                for _ in range(n):
                    w.add_episode(synthetic_episode(rng, 20, 32), task_id=t, success=False)
    (tmp_path / "c.json").write_text(json.dumps({"preset": "tiny", "steps": 6, "holdout_every": 4}))
    out = tmp_path / "b.json"
    assert main(["--family", "syn", str(tmp_path / "train.zarr"), str(tmp_path / "test.zarr"),
                 "--config", str(tmp_path / "c.json"), "--adapt-steps", "4", "--horizon", "3",
                 "--workdir", str(tmp_path / "w"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())["syn"]
    for key in ("uncertainty_error_spearman", "ood_action_auroc", "adapted_over_meta_loss_ratio",
                "adapted_over_scratch_loss_ratio", "adapted_over_meta_image_loss_ratio",
                "train_steps_per_s", "data_wait_share"):
        assert np.isfinite(res[key]), key
    assert 0 <= res["ood_action_auroc"] <= 1
