"""Fixtures shared by the learning tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny networks: thread start-up costs more than the matmuls, and one thread keeps the
    numbers identical run to run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_synthetic_model(tmp_path):
    """make(episodes, length) -> (store path, world model): synthetic 32-px episodes of task 0
    and a `tiny` world model trained 2 steps on them (for tests of code that needs any model)."""
    import dataclasses

    import numpy as np

    from learning.store import EpisodeWriter
    from learning.synthetic import bench_spec, synthetic_episode
    from learning.world_model_train import load_world_model, preset, train

    def make(episodes: int, length: int):
        rng = np.random.default_rng(0)
        path = tmp_path / "s.zarr"
        with EpisodeWriter(path, bench_spec(32), mode="w", log=lambda m: None) as w:
            for _ in range(episodes):
                w.add_episode(synthetic_episode(rng, length, 32), task_id=0, success=False)
        train(str(path), dataclasses.replace(preset("tiny"), steps=2), tmp_path / "r", progress=False)
        return str(path), load_world_model(tmp_path / "r")[0]

    return make
