"""Sequence sampling for training: batches of B windows of L consecutive rows.

Windows never cross an episode boundary and are drawn uniformly over all valid windows
(of one task, of a set of tasks, or of the whole store). The same sampler serves the image
store (`EpisodeStore`, in-memory or lazy chunk-cached reads) and cached latent arrays
(`ArraySource`), so the learning stage runs the same code on 320-d latents.

Torch-free (numpy only): tensors are made by the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np


class WindowSource(Protocol):
    """What a sampler reads from: episode boundaries, task ids and row ranges."""

    episode_ends: np.ndarray
    episode_task: np.ndarray

    def read(self, key: str, start: int, stop: int) -> np.ndarray: ...

    def array_shape(self, key: str) -> tuple[int, ...]: ...


class ArraySource:
    """In-memory arrays with the store's episode structure (e.g. cached posterior latents)."""

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        episode_ends: np.ndarray,
        episode_task: np.ndarray | None = None,
    ) -> None:
        self.arrays = dict(arrays)
        self.episode_ends = np.asarray(episode_ends, dtype=np.int64)
        n = int(self.episode_ends[-1]) if len(self.episode_ends) else 0
        for key, arr in self.arrays.items():
            if len(arr) != n:
                raise ValueError(f"array {key!r} has {len(arr)} rows, episode_ends says {n}")
        self.episode_task = (
            np.zeros(len(self.episode_ends), np.int64)
            if episode_task is None
            else np.asarray(episode_task, dtype=np.int64)
        )

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        return self.arrays[key][start:stop]

    def array_shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.arrays[key].shape)


class SequenceSampler:
    """Uniform windows of `seq_len` rows inside episodes; optionally restricted to tasks."""

    def __init__(
        self,
        source: WindowSource,
        seq_len: int,
        batch_size: int,
        keys: Sequence[str],
        tasks: Sequence[int] | None = None,
        episodes: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        if seq_len < 1 or batch_size < 1:
            raise ValueError("seq_len and batch_size must be at least 1")
        self.source = source
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.keys = list(keys)
        self.rng = np.random.default_rng(seed)
        ends = np.asarray(source.episode_ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        task = np.asarray(source.episode_task, dtype=np.int64)
        chosen = np.ones(len(ends), bool)
        if episodes is not None:
            chosen[:] = False
            chosen[np.asarray(episodes, dtype=np.int64)] = True
        if tasks is not None:
            wanted = set(int(t) for t in tasks)
            missing = wanted - set(task[chosen].tolist())
            if missing:
                raise ValueError(f"no episodes of task(s) {sorted(missing)} in the data")
            chosen &= np.isin(task, list(wanted))
        n_windows = np.where(chosen, np.maximum(ends - starts - self.seq_len + 1, 0), 0)
        if n_windows.sum() == 0:
            raise ValueError(
                f"no episode is at least {self.seq_len} rows long (longest: "
                f"{int((ends - starts).max()) if len(ends) else 0}); use a shorter window"
            )
        self._starts, self._task, self._n_windows = starts, task, n_windows
        self.tasks = sorted(set(task[n_windows > 0].tolist()))
        self._index = {t: self._cumulative(task == t) for t in self.tasks}
        self._index[None] = self._cumulative(np.ones(len(ends), bool))

    def _cumulative(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eps = np.flatnonzero(mask & (self._n_windows > 0))
        return eps, np.cumsum(self._n_windows[eps])

    def n_windows(self, task: int | None = None) -> int:
        return int(self._index[task][1][-1]) if task in self._index else 0

    def draw(self, batch_size: int | None = None, task: int | None = None) -> np.ndarray:
        """Start rows of `batch_size` windows, uniform over the valid windows of `task`."""
        if task not in self._index:
            raise ValueError(f"task {task} has no window of {self.seq_len} rows")
        eps, cum = self._index[task]
        k = self.rng.integers(0, cum[-1], size=batch_size or self.batch_size)
        j = np.searchsorted(cum, k, side="right")
        offset = k - np.concatenate([[0], cum[:-1]])[j]
        return self._starts[eps[j]] + offset

    def gather(self, window_starts: np.ndarray) -> dict[str, np.ndarray]:
        """Read the windows; reads go in row order so neighbouring windows share chunks."""
        L = self.seq_len
        out: dict[str, np.ndarray] = {}
        order = np.argsort(window_starts, kind="stable")
        for key in self.keys:
            first = self.source.read(key, int(window_starts[order[0]]), int(window_starts[order[0]]) + L)
            buf = np.empty((len(window_starts), L, *first.shape[1:]), dtype=first.dtype)
            buf[order[0]] = first
            for b in order[1:]:
                s = int(window_starts[b])
                buf[b] = self.source.read(key, s, s + L)
            out[key] = buf
        ep = np.searchsorted(self.source.episode_ends, window_starts, side="right")
        out["task"] = self._task[ep]
        out["start"] = np.asarray(window_starts, dtype=np.int64)
        return out

    def sample(self, task: int | None = None, batch_size: int | None = None) -> dict[str, np.ndarray]:
        return self.gather(self.draw(batch_size, task))

    def batches(self, n: int, task: int | None = None, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        """`n` batches, read ahead by a background thread (zarr/blosc release the GIL)."""
        if prefetch <= 0:
            for _ in range(n):
                yield self.sample(task)
            return
        q: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()

        def work() -> None:
            try:
                for _ in range(n):
                    if stop.is_set():
                        return
                    q.put(self.sample(task))
            except BaseException as e:  # surfaced in the consumer
                q.put(e)

        thread = threading.Thread(target=work, daemon=True, name="sampler-prefetch")
        thread.start()
        try:
            for _ in range(n):
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)
