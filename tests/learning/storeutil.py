"""Deterministic small stores for tests: episode k is fully determined by k."""

from __future__ import annotations

import numpy as np

from learning.store import EpisodeWriter, StoreSpec

SIZE = 16


def spec(n_tasks: int = 3, size: int = SIZE) -> StoreSpec:
    return StoreSpec(
        robot="test-arm", control_hz=10.0, image_size=size,
        state_names=["q0", "q1"], action_names=["dx", "dy", "grip"],
        action_low=[-1.0, -1.0, 0.0], action_high=[1.0, 1.0, 1.0],
        gripper_channel=2, hold_action=[0.0, 0.0, 0.0],
        reward_source={"type": "simulator"},
        tasks=[{"id": i, "name": f"task{i}", "split": "train" if i else "test"} for i in range(n_tasks)],
    )


def episode(k: int, length: int | None = None, size: int = SIZE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(k)
    T = length or 10 + k % 7
    image = np.full((T, size, size, 3), k % 251, np.uint8)
    image[:, 0, 0, 0] = np.arange(T) % 256
    return {
        "image": image,
        "state": rng.normal(size=(T, 2)).astype(np.float32),
        "action": rng.uniform(-1, 1, (T, 3)).astype(np.float32),
        "reward": np.full(T, k, np.float32),
        "terminal": np.zeros(T, bool),
        "timestamp": np.arange(T) / 10.0,
    }


def check_episode(ep: dict[str, np.ndarray], k: int, length: int | None = None,
                  size: int = SIZE) -> None:
    ref = episode(k, length, size)
    for key in ref:
        np.testing.assert_array_equal(ep[key], ref[key], err_msg=f"episode {k} data/{key}")


def make_store(path, n: int = 6, zarr_format: int = 2, n_tasks: int = 3):
    with EpisodeWriter(path, spec(n_tasks), mode="w", zarr_format=zarr_format) as w:
        for k in range(n):
            w.add_episode(episode(k), task_id=k % n_tasks, success=k % 2 == 0,
                          provenance={"quality": "expert" if k % 2 == 0 else "medium", "seed": k})
    return path
