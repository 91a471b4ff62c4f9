"""Synthetic episodes for tests and benchmarks: rendered-looking frames that compress like
MuJoCo renders, with random states, actions and rewards, and a matching store spec."""

from __future__ import annotations

import numpy as np

from learning.store import StoreSpec


def synthetic_episode(rng: np.random.Generator, length: int, size: int) -> dict[str, np.ndarray]:
    """Rendered-looking frames: a static shaded scene with two moving blocks (compresses
    like MuJoCo renders do, unlike white noise)."""
    yy, xx = np.mgrid[0:size, 0:size]
    scene = np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.uint8) + rng.integers(0, 60, 3, dtype=np.uint8)
    images = np.repeat(scene[None], length, 0)
    pos = rng.uniform(8, size - 8, (2, 2)) + np.cumsum(rng.normal(0, 0.7, (length, 2, 2)), 0)
    pos = np.clip(pos, 4, size - 5).astype(int)
    for t in range(length):
        for k, color in enumerate(((220, 40, 40), (40, 200, 60))):
            y, x = pos[t, k]
            images[t, y - 4 : y + 4, x - 4 : x + 4] = color
    return {
        "image": images,
        "state": rng.normal(size=(length, 8)).astype(np.float32),
        "action": rng.uniform(-1, 1, (length, 4)).astype(np.float32),
        "reward": rng.normal(size=length).astype(np.float32),
        "terminal": np.zeros(length, bool),
        "timestamp": np.arange(length) / 12.5,
    }


def bench_spec(size: int) -> StoreSpec:
    return StoreSpec(
        robot="synthetic", control_hz=12.5, image_size=size,
        state_names=[f"q{i}" for i in range(8)], action_names=["dx", "dy", "dz", "grip"],
        action_low=[-1.0] * 4, action_high=[1.0] * 4,
        tasks=[{"id": i, "name": f"task{i}", "split": "train"} for i in range(10)],
    )
