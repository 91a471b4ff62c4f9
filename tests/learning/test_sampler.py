"""Sequence sampler: windows stay inside episodes, are uniform, per task, and match the data."""

from __future__ import annotations

import numpy as np
import pytest

from learning.sampler import ArraySource, SequenceSampler
from learning.store import EpisodeStore
from tests.learning.storeutil import make_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("s") / "s.zarr", n=12)


@pytest.mark.parametrize("load", ["memory", "lazy"])
def test_windows_never_cross_episodes_and_match_rows(store_path, load):
    store = EpisodeStore.open(store_path, load=load, cache_mb=0.02)
    sampler = SequenceSampler(store, seq_len=8, batch_size=64, keys=["image", "reward", "action"], seed=1)
    for _ in range(5):
        batch = sampler.sample()
        assert batch["image"].shape == (64, 8, 16, 16, 3) and batch["reward"].shape == (64, 8)
        # reward of episode k is constant k: a window across a boundary would mix values
        assert np.all(batch["reward"] == batch["reward"][:, :1])
        for b, s in enumerate(batch["start"]):
            ep = int(np.searchsorted(store.episode_ends, s, side="right"))
            assert s + 8 <= store.episode_ends[ep]
            np.testing.assert_array_equal(batch["action"][b], store.read("action", s, s + 8))
            assert batch["task"][b] == store.episode_task[ep]


def test_uniform_over_windows_and_per_task(store_path):
    store = EpisodeStore.open(store_path)
    sampler = SequenceSampler(store, seq_len=10, batch_size=4000, keys=["reward"], seed=0)
    starts = sampler.draw()
    ep = np.searchsorted(store.episode_ends, starts, side="right")
    n_windows = np.maximum(store.episode_lengths - 10 + 1, 0)
    expected = n_windows / n_windows.sum()
    observed = np.bincount(ep, minlength=store.n_episodes) / len(starts)
    np.testing.assert_allclose(observed, expected, atol=0.03)
    assert np.all(observed[n_windows == 0] == 0)  # episodes shorter than the window: never
    only1 = sampler.sample(task=1)
    assert np.all(only1["task"] == 1)
    restricted = SequenceSampler(store, 10, 32, ["reward"], tasks=[2], seed=0)
    assert np.all(restricted.sample()["task"] == 2)


def test_errors_name_the_problem(store_path):
    store = EpisodeStore.open(store_path)
    with pytest.raises(ValueError, match="at least 500 rows"):
        SequenceSampler(store, seq_len=500, batch_size=4, keys=["image"])
    with pytest.raises(ValueError, match=r"task\(s\) \[7\]"):
        SequenceSampler(store, seq_len=4, batch_size=4, keys=["image"], tasks=[7])


def test_latent_mode_and_prefetch_give_the_same_batches():
    ends = np.array([20, 45, 60])
    latents = np.arange(60 * 5, dtype=np.float32).reshape(60, 5)
    source = ArraySource({"latent": latents}, ends, np.array([0, 1, 1]))
    a = SequenceSampler(source, 6, 16, ["latent"], seed=3)
    b = SequenceSampler(source, 6, 16, ["latent"], seed=3)
    plain = [a.sample()["latent"] for _ in range(4)]
    prefetched = [x["latent"] for x in b.batches(4, prefetch=2)]
    for x, y in zip(plain, prefetched, strict=True):
        np.testing.assert_array_equal(x, y)
        # consecutive rows inside each window
        assert np.all(np.diff(x[:, :, 0], axis=1) == 5)
    with pytest.raises(ValueError, match="rows"):
        ArraySource({"latent": latents[:50]}, ends)
