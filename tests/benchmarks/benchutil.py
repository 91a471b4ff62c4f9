"""Inputs shared by the benchmark tests."""

from __future__ import annotations

from pathlib import Path


def world_model_bench_inputs(tmp_path: Path, test_tasks: list[int], test_episodes: int, steps: int) -> Path:
    """Synthetic stores for the world-model benchmarks (train.zarr: tasks 0 and 1 x 4 episodes;
    test.zarr: `test_tasks` x `test_episodes`) and a `tiny` config with the bench preset's
    ensemble (action-reading heads, random priors) of `steps` steps; returns the config's path."""
    import json

    import numpy as np

    from learning.store import EpisodeWriter
    from learning.synthetic import bench_spec, synthetic_episode

    rng = np.random.default_rng(0)
    for name, tasks, n in (("train", [0, 1], 4), ("test", test_tasks, test_episodes)):
        with EpisodeWriter(tmp_path / f"{name}.zarr", bench_spec(32), mode="w", log=lambda m: None) as w:
            for t in tasks:
                for _ in range(n):
                    w.add_episode(synthetic_episode(rng, 20, 32), task_id=t, success=False)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"preset": "tiny", "steps": steps, "holdout_every": 4,
                                  "model": {"prior_action": True, "prior_random_scale": 3.0}}))
    return config
