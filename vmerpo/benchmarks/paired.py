"""Intervals for the learning benchmark: hierarchical (cluster) bootstrap over tasks, then log draws.

The benchmark's unit is one (held-out task, log draw): every method is adapted to the same
log and evaluated on the same episode starts, so methods are compared **paired**, unit by
unit. Units of one task are not independent (the task's goal is shared), units of different
tasks are, and each draw is an independent collection of the task's log. The interval
therefore resamples the independent levels in order: tasks with replacement, then the draws
of each chosen task with replacement (a two-stage cluster bootstrap, Davison & Hinkley 1997,
section 3.8), and takes the percentile interval of the mean over the resampled units.

`bootstrap_mean` is the interval of one method's mean success (units' success rates);
`paired_difference` the interval of the mean of per-unit differences between two methods
(units present for both only). Both are deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Unit = tuple[int, int]  # (task, draw)


def _grouped(values: Mapping[Unit, float]) -> list[np.ndarray]:
    tasks: dict[int, list[float]] = {}
    for (task, _draw), v in sorted(values.items()):
        tasks.setdefault(int(task), []).append(float(v))
    return [np.asarray(v, np.float64) for v in tasks.values()]


def bootstrap_mean(values: Mapping[Unit, float], n_boot: int = 10_000, level: float = 0.95,
                   seed: int = 0) -> dict[str, Any]:
    """Mean over units and its two-stage (tasks, then draws) percentile bootstrap interval.

    Returns {"mean", "low", "high", "half_width", "n_units", "n_tasks"}; with one task the
    interval covers the draws only, with one unit it is the point itself."""
    if not values:
        raise ValueError("no units to summarize")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level}: must be in (0, 1)")
    groups = _grouped(values)
    mean = float(np.mean(np.concatenate(groups)))
    rng = np.random.default_rng(seed)
    n_tasks = len(groups)
    sizes = np.array([len(g) for g in groups])
    # pad to a rectangle so the resampling is vectorised: draw indices within each task's size
    width = int(sizes.max())
    table = np.zeros((n_tasks, width))
    for i, g in enumerate(groups):
        table[i, :len(g)] = g
    boot = np.empty(n_boot)
    chunk = 2_000
    for s in range(0, n_boot, chunk):
        b = min(chunk, n_boot - s)
        pick = rng.integers(n_tasks, size=(b, n_tasks))  # tasks, with replacement
        k = sizes[pick]  # each picked task's number of draws
        draws = (rng.random((b, n_tasks, width)) * k[..., None]).astype(np.int64)  # draws, with replacement
        used = np.arange(width)[None, None, :] < k[..., None]  # a task contributes its own count of draws
        vals = table[pick[..., None], draws]
        boot[s:s + b] = (vals * used).sum((1, 2)) / used.sum((1, 2))
    alpha = (1.0 - level) / 2
    low, high = (float(x) for x in np.quantile(boot, [alpha, 1.0 - alpha]))
    return {"mean": mean, "low": low, "high": high, "half_width": (high - low) / 2,
            "n_units": int(sizes.sum()), "n_tasks": n_tasks}


def paired_difference(a: Mapping[Unit, float], b: Mapping[Unit, float], n_boot: int = 10_000,
                      level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Mean of a - b over the units both have, with the two-stage bootstrap interval."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two methods share no (task, draw) unit")
    return bootstrap_mean({u: float(a[u]) - float(b[u]) for u in common}, n_boot, level, seed)
