"""Episode-store benchmark: write frames/s (durable commits, and their fsync cost per
episode) and sampler frames/s, against a plain memmap.

    vmerpo bench store   --out results/bench_store.json     # write + sampler
    vmerpo bench sampler --out results/bench_sampler.json   # the sampler's reads alone

All rates are measured in one run on the same data, so the ratios are what to read
(these machines are noisy). Targets (2-core CPU): in-memory sampler at least half the
memmap rate; lazy chunk-cached sampler at least 10,000 frames/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from learning.sampler import ArraySource, SequenceSampler
from learning.store import EpisodeStore, EpisodeWriter
from learning.synthetic import bench_spec, synthetic_episode


def _rate(fn, frames_per_call: int, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * frames_per_call / (time.perf_counter() - t0)


def run(episodes: int = 160, length: int = 150, size: int = 64, batch: int = 64, seq_len: int = 50,
        seconds: float = 3.0, cache_mb: float = 64, workdir: str | None = None, seed: int = 0) -> dict:
    tmp = Path(workdir or tempfile.mkdtemp(prefix="vmerpo-bench-"))
    path = tmp / "bench.zarr"
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    data = [synthetic_episode(rng, length, size) for _ in range(episodes)]
    frames = episodes * length

    t0 = time.perf_counter()
    with EpisodeWriter(path, bench_spec(size), mode="w", log=lambda m: None) as w:
        for i, ep in enumerate(data):
            w.add_episode(ep, task_id=i % 10, success=False)
    t_durable = time.perf_counter() - t0
    write_fps = frames / t_durable
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    # The same episodes without the fsyncs that make each commit durable: their cost per episode.
    fast = tmp / "bench_not_durable.zarr"
    shutil.rmtree(fast, ignore_errors=True)
    t0 = time.perf_counter()
    with EpisodeWriter(fast, bench_spec(size), mode="w", log=lambda m: None, durable=False) as w:
        for i, ep in enumerate(data):
            w.add_episode(ep, task_id=i % 10, success=False)
    t_fast = time.perf_counter() - t0
    shutil.rmtree(fast, ignore_errors=True)

    results: dict = {"frames": frames, "episodes": episodes, "image_size": size,
                     "window": [batch, seq_len], "write_frames_per_s": write_fps,
                     "write_frames_per_s_without_fsync": frames / t_fast,
                     "fsync_ms_per_episode": (t_durable - t_fast) / episodes * 1e3,
                     "store_bytes": disk,
                     "image_compression_ratio": frames * size * size * 3 / max(
                         sum(f.stat().st_size for f in (path / "data" / "image").rglob("*") if f.is_file()), 1)}

    mem = EpisodeStore.open(path, load="memory")
    s_mem = SequenceSampler(mem, seq_len, batch, ["image"], seed=seed)
    results["sampler_memory_frames_per_s"] = _rate(s_mem.sample, batch * seq_len, seconds)

    lazy = EpisodeStore.open(path, load="lazy", cache_mb=cache_mb)
    s_lazy = SequenceSampler(lazy, seq_len, batch, ["image"], seed=seed)
    results["sampler_lazy_frames_per_s"] = _rate(s_lazy.sample, batch * seq_len, seconds)
    results["lazy_cache_mb"] = cache_mb
    results["lazy_cache_hit_rate"] = lazy.cache.hits / max(lazy.cache.hits + lazy.cache.misses, 1)
    results["store_raw_image_mb"] = frames * size * size * 3 / 2**20

    # The same windows sliced from a plain uncompressed numpy memmap.
    npy = tmp / "images.npy"
    np.save(npy, mem.read("image", 0, mem.n_frames))
    mm = np.load(npy, mmap_mode="r")
    source = ArraySource({"image": mm}, mem.episode_ends, mem.episode_task)
    s_mm = SequenceSampler(source, seq_len, batch, ["image"], seed=seed)
    results["memmap_frames_per_s"] = _rate(s_mm.sample, batch * seq_len, seconds)

    results["memory_over_memmap"] = results["sampler_memory_frames_per_s"] / results["memmap_frames_per_s"]
    results["targets"] = {
        "memory_over_memmap_at_least_0.5": results["memory_over_memmap"] >= 0.5,
        "lazy_at_least_10000_frames_per_s": results["sampler_lazy_frames_per_s"] >= 10_000,
    }
    if workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vmerpo bench store", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "sampler"), default="all",
                    help="all: write and sampler rates; sampler: report the sampler's reads alone "
                         "(the store is still written first, untimed)")
    ap.add_argument("--episodes", type=int, default=160, help="episodes in the benchmark store")
    ap.add_argument("--length", type=int, default=150, help="frames per episode")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measured rate")
    ap.add_argument("--cache-mb", type=float, default=64, help="lazy mode chunk cache (smaller than the store)")
    ap.add_argument("--out", default=None,
                    help="JSON output path (default results/bench_store.json, or bench_sampler.json with --part sampler)")
    args = ap.parse_args(argv)
    args.out = args.out or f"results/bench_{'store' if args.part == 'all' else 'sampler'}.json"
    res = run(args.episodes, args.length, args.size, seconds=args.seconds, cache_mb=args.cache_mb)
    if args.part == "sampler":
        res = {k: v for k, v in res.items() if not k.startswith(("write_", "store_bytes", "image_compression"))}
    for k, v in res.items():
        print(f"{k:34s} {v:,.1f}" if isinstance(v, float) else f"{k:34s} {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(res["targets"].values()) else 1
