"""Summaries, contact sheets and videos of an episode store (`vmerpo inspect`).

Torch-free: runs on the robot computer as well.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from learning.store import EpisodeStore


def store_size_bytes(path: str) -> int:
    if "://" in path:
        import fsspec

        fs, root = fsspec.core.url_to_fs(path)
        return int(fs.du(root))
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def summarize(store: EpisodeStore) -> dict[str, Any]:
    """Machine-readable summary; every number is computed from the store."""
    lengths = store.episode_lengths
    returns = store.episode_returns()
    names = {int(t["id"]): t for t in store.spec.tasks}
    tasks: dict[str, Any] = {}
    known = "episode_success" not in store.absent  # another tool's store may not say
    for tid in sorted(set(store.episode_task.tolist()) | set(names)):
        mask = store.episode_task == tid
        info = names.get(tid, {})
        tasks[str(tid)] = {
            "name": info.get("name", f"task {tid}"),
            "split": info.get("split", ""),
            "episodes": int(mask.sum()),
            "frames": int(lengths[mask].sum()),
            "mean_return": float(returns[mask].mean()) if mask.any() else None,
            "success_rate": float(store.episode_success[mask].mean()) if mask.any() and known else None,
        }
    size = store_size_bytes(store.path)
    raw = sum(int(np.prod(store.array_shape(k))) * _itemsize(store, k) for k in store.data_keys)
    out: dict[str, Any] = {
        "path": store.path,
        "zarr_format": store.zarr_format,
        "robot": store.spec.robot,
        "control_hz": store.spec.control_hz,
        "episodes": store.n_episodes,
        "frames": store.n_frames,
        "image_shape": list(store.array_shape("image")[1:]),
        "state_names": store.spec.state_names,
        "action_names": store.spec.action_names,
        "action_type": store.spec.action_type,
        "reward_source": store.spec.reward_source,
        "episode_length": _stats(lengths),
        "return": _stats(returns),
        "success_rate": float(store.episode_success.mean()) if store.n_episodes and known else None,
        "tasks": tasks,
        "size_bytes": size,
        "compression_ratio": raw / size if size else None,
        # rows/entries past the last commit, per array (a killed writer's): see format_leftover
        "leftover": store.leftover,
    }
    if store.foreign:  # another tool's store, read through its spec
        out["keys"] = dict(store.spec.keys)
        out["absent"] = list(store.absent)
    for name in store.provenance_names():
        values = store.provenance(name)
        if values.dtype == object:  # categorical provenance: a breakdown per value
            out[f"per_{name}"] = {
                str(v): {
                    "episodes": int((values == v).sum()),
                    "success_rate": float(store.episode_success[values == v].mean()),
                    "mean_return": float(returns[values == v].mean()),
                }
                for v in sorted(set(values.tolist()))
            }
    return out


def _itemsize(store: EpisodeStore, key: str) -> int:
    arr = store._arrays.get(key)  # None: an array another tool's store lacks (read as a default)
    return int((arr if arr is not None else store._memory[key]).dtype.itemsize)


def _stats(x: np.ndarray) -> dict[str, float] | None:
    if len(x) == 0:
        return None
    return {"min": float(x.min()), "mean": float(x.mean()), "max": float(x.max()),
            "std": float(x.std())}


def format_summary(s: dict[str, Any]) -> str:
    mb = s["size_bytes"] / 2**20
    ratio = f", compression {s['compression_ratio']:.1f}x" if s["compression_ratio"] else ""
    lines = [
        f"store      {s['path']} (zarr format {s['zarr_format']}, {mb:.1f} MiB on disk{ratio})",
        f"robot      {s['robot']}, {s['control_hz']:g} Hz, actions {s['action_type']} "
        f"[{', '.join(s['action_names'])}], state [{', '.join(s['state_names'][:8])}"
        f"{', ...' if len(s['state_names']) > 8 else ''}]",
        f"data       {s['episodes']} episodes, {s['frames']} frames, image "
        f"{'x'.join(map(str, s['image_shape']))}, reward from {s['reward_source'].get('type', '?')}",
    ]
    if s["episodes"]:
        el, r = s["episode_length"], s["return"]
        lines.append(f"length     min {el['min']:.0f} / mean {el['mean']:.1f} / max {el['max']:.0f}")
        success = "unknown" if s["success_rate"] is None else f"{s['success_rate']:.2f}"
        lines.append(f"return     mean {r['mean']:.2f} +- {r['std']:.2f}, success {success}")
    if s.get("keys") is not None:
        lines.append("written by another tool; keys " + (", ".join(f"{k} <- {v}" for k, v in s["keys"].items())
                                                          or "as vmerpo's") + "; absent "
                     + (", ".join(s["absent"]) or "none"))
    if s.get("leftover"):
        lines.append(format_leftover(s["path"], s["leftover"]))
    lines.append("")
    lines.append(f"{'task':>5}  {'name':24s} {'split':6s} {'episodes':>8} {'frames':>8} {'return':>9} {'success':>7}")
    for tid, t in s["tasks"].items():
        ret = f"{t['mean_return']:9.2f}" if t["mean_return"] is not None else f"{'-':>9}"
        suc = f"{t['success_rate']:7.2f}" if t["success_rate"] is not None else f"{'-':>7}"
        lines.append(f"{tid:>5}  {t['name'][:24]:24s} {t['split'][:6]:6s} {t['episodes']:8d} "
                     f"{t['frames']:8d} {ret} {suc}")
    for key, table in s.items():
        if key.startswith("per_"):
            lines.append("")
            lines.append(f"{key[4:]:>12s}  episodes  success  return")
            for v, row in table.items():
                lines.append(f"{v[:12]:>12s}  {row['episodes']:8d}  {row['success_rate']:7.2f}  "
                             f"{row['mean_return']:6.2f}")
    return "\n".join(lines)


def format_leftover(path: str, leftover: dict[str, int]) -> str:
    """One line: the uncommitted rows per array and what to do about them."""
    data = [f"{k} {n}" for k, n in leftover.items() if k.startswith("data/")]
    meta = [f"{k} {n}" for k, n in leftover.items() if not k.startswith("data/")]
    parts = ([f"rows {', '.join(data)}"] if data else []) + ([f"entries {', '.join(meta)}"] if meta else [])
    return (f"leftover   uncommitted {'; '.join(parts)} (an interrupted writer's): ignored by vmerpo, "
            f"but zarr-2 readers such as diffusion_policy's ReplayBuffer refuse them; run "
            f"`vmerpo repair {path}`")


def contact_sheet_and_returns(store: EpisodeStore, out: str | os.PathLike, episodes: list[int],
                              frames_per_episode: int = 8) -> None:
    """PNG: a grid of frames (rows = episodes, columns = evenly spaced times) and a histogram
    of episode returns per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for i in episodes:
        s, e = int(store.episode_starts[i]), int(store.episode_ends[i])
        t = np.linspace(s, e - 1, frames_per_episode).round().astype(int)
        rows.append(np.concatenate([store.read("image", k, k + 1)[0] for k in t], axis=1))
    sheet = np.concatenate(rows, axis=0) if rows else np.zeros((8, 8, 3), np.uint8)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(14, max(4, 0.9 * len(rows) + 1)),
                                   gridspec_kw={"width_ratios": [2, 1]})
    ax0.imshow(sheet, interpolation="nearest")
    ax0.set_yticks([(r + 0.5) * sheet.shape[0] / max(len(rows), 1) for r in range(len(rows))])
    ax0.set_yticklabels([f"ep {i} (task {store.episode_task[i]})" for i in episodes])
    ax0.set_xticks([])
    ax0.set_title("frames at evenly spaced times")
    returns = store.episode_returns()
    for tid in sorted(set(store.episode_task.tolist())):
        ax1.hist(returns[store.episode_task == tid], bins=15, alpha=0.5, label=f"task {tid}")
    ax1.set_xlabel("episode return")
    ax1.set_ylabel("episodes")
    ax1.set_title("returns per task")
    if len(set(store.episode_task.tolist())) <= 12:
        ax1.legend(fontsize=7)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def episodes_video(store: EpisodeStore, out: str | os.PathLike, episodes: list[int],
                   scale: int = 4, fps: float | None = None) -> int:
    """MP4 of the chosen episodes one after another, captioned; returns frames written."""
    import cv2

    h, w = store.array_shape("image")[1:3]
    size = (w * scale, h * scale)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"),
                             fps or min(store.spec.control_hz, 30.0), size)
    if not writer.isOpened():
        raise OSError(f"cannot open video writer for {out}")
    n = 0
    try:
        for i in episodes:
            s, e = int(store.episode_starts[i]), int(store.episode_ends[i])
            images = store.read("image", s, e)
            for t, img in enumerate(images):
                frame = cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)
                frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                cv2.putText(frame, f"ep {i} task {store.episode_task[i]} t {t}", (4, 14),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
                writer.write(frame)
                n += 1
    finally:
        writer.release()
    return n
