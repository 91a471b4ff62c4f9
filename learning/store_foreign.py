"""Stores written by other tools (diffusion_policy's ReplayBuffer, LeRobot exports, a lab's own
zarr code): what they hold, and the spec that lets every vmerpo verb read them.

    describe(path)            arrays, shapes, dtypes and episodes of a layout-conforming store,
                              with or without a spec, and what it still lacks for training
    guess_keys(names)         our array names from common ones (img -> image, obs -> state, ...)
    infer_spec(path, ...)     a StoreSpec from the store's arrays, flags and an optional YAML file
    write_spec(path, spec)    put it into the store's attrs (`vmerpo spec`)
    load_spec_file(file)      read one from YAML or JSON (`--spec FILE` of every reading verb)

The layout is contract 1's (data/<key> concatenated over time, meta/episode_ends). The arrays
are never rewritten: a spec maps names (`keys`) and lists what the store lacks (`absent`), and
vmerpo never appends to a store it did not write. Torch-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learning.store import (
    ACTION_TYPES,
    MAPPABLE_KEYS,
    META_KEYS,
    OPTIONAL_KEYS,
    EpisodeStore,
    StoreError,
    StoreSpec,
    _commit_state,
    _exists,
    _is_url,
    _lock_store,
    _members,
    _open_group,
    _read,
    _scan_local,
    _spec_type_error,
    _unlock_store,
    written_by_vmerpo,
)

# Common names in other tools' stores, in order of preference, for each of ours.
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "image": ("image", "img", "rgb", "images", "camera_0", "agentview_image", "pixels"),
    "state": ("state", "obs", "agent_pos", "qpos", "joint_positions", "proprio", "robot_state"),
    "action": ("action", "actions", "act"),
    "reward": ("reward", "rewards"),
    "terminal": ("terminal", "terminals", "done", "dones", "is_terminal"),
    "timestamp": ("timestamp", "timestamps", "time"),
    "episode_task": ("episode_task", "task", "task_id", "episode_task_id"),
    "episode_success": ("episode_success", "success", "is_success"),
}
SPEC_REQUIRED = ("robot", "control_hz", "image_size", "state_names", "action_names", "action_low",
                 "action_high")  # what StoreSpec.from_attrs needs
NEEDED = ("image", "state", "action", "reward")  # what learning cannot do without
ABSENT_MEANS = {
    "terminal": "no terminations (every episode ends by a time limit)",
    "timestamp": "row times from control_hz",
    "episode_task": "every episode is the task table's one task",
    "episode_success": "success unknown (read as False)",
}


def guess_keys(data: Sequence[str], meta: Sequence[str]) -> dict[str, str]:
    """Our key -> the store's array name, for each of ours found under a common name."""
    out: dict[str, str] = {}
    for key in MAPPABLE_KEYS:
        names = meta if key in META_KEYS else data
        hit = next((n for n in COMMON_NAMES.get(key, (key,)) if n in names), None)
        if hit is not None:
            out[key] = hit
    return out


def _group_arrays(root: Any, path: str, group: str) -> dict[str, Any]:
    """{name: array} under data/ or meta/ (the reader's listing, its errors)."""
    return {full.split("/", 1)[1]: a for full, a in _members(root, path, group)}


def describe(path: str | os.PathLike, keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a layout-conforming store holds, read without a spec (shapes, dtypes, episodes, the
    key mapping vmerpo would use) and what it lacks for training. The store is validated as
    EpisodeStore.open validates it (links, special files, declared lengths) before any read."""
    path = str(path)
    if not _exists(path):
        raise FileNotFoundError(f"{path}: no such episode store")
    files = None if _is_url(path) else _scan_local(path)  # links and special files: before any read
    try:
        root = _open_group(path, "r")
    except Exception as e:
        raise StoreError(f"{path}: not a zarr group ({type(e).__name__}: {e})") from None
    data, meta = _group_arrays(root, path, "data"), _group_arrays(root, path, "meta")
    if "episode_ends" not in meta:
        raise StoreError(f"{path}: missing array meta/episode_ends (the layout's commit point: "
                         "data/<key> concatenated over time plus meta/episode_ends)")
    state = _commit_state(root, path, files)
    given = dict(keys or {})
    mapping = {**guess_keys(list(data), list(meta)), **given}
    attrs = dict(root.attrs)
    lacking: list[str] = []
    for key, name in given.items():  # a name given explicitly must exist (a typo is not "absent")
        group, members = ("meta", meta) if key in META_KEYS else ("data", data)
        if name not in members:
            lacking.append(f"{group}/{name} (mapped by --key {key}={name}): no such array")
    for key in NEEDED:
        if mapping.get(key) not in data and key not in given:
            lacking.append(f"data/{key}: no array of that name or a common alias "
                           f"({', '.join(COMMON_NAMES[key])}); map one with --key {key}=NAME")
    image = data.get(mapping.get("image", ""))
    if image is not None:
        shape, dtype = tuple(int(d) for d in image.shape[1:]), np.dtype(image.dtype)
        if len(shape) != 3 or shape[2] != 3 or shape[0] != shape[1] or dtype != np.uint8:
            lacking.append(f"data/{mapping['image']}: rows {shape} {dtype}; vmerpo reads square RGB uint8 "
                           "images [T, H, H, 3]")
    if "spec" not in attrs:
        lacking.append("a spec: `vmerpo spec STORE --control-hz HZ --action-type TYPE` writes one "
                       "(or pass --spec FILE)")
    absent = [k for k in OPTIONAL_KEYS
              if mapping.get(k) not in (meta if k in META_KEYS else data)]

    def arrays(group: str, members: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"name": f"{group}/{n}", "shape": [int(d) for d in a.shape], "dtype": str(a.dtype),
                 "chunks": [int(c) for c in a.chunks]} for n, a in sorted(members.items())]

    lengths = np.diff(np.concatenate([[0], state.episode_ends])) if state.n_episodes else np.zeros(0)
    return {
        "path": path,
        "zarr_format": int(root.metadata.zarr_format),
        "written_by_vmerpo": written_by_vmerpo(root),
        "has_spec": "spec" in attrs,
        "episodes": state.n_episodes,
        "frames": state.n_frames,
        "episode_length": ({"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())}
                           if len(lengths) else None),
        "arrays": arrays("data", data) + arrays("meta", meta),
        "keys": {k: v for k, v in mapping.items() if k != v},
        "absent": {k: ABSENT_MEANS[k] for k in absent},
        "leftover": dict(state.leftover),
        "missing_for_training": lacking,
    }


def format_description(d: dict[str, Any]) -> str:
    lines = [
        f"store      {d['path']} (zarr format {d['zarr_format']}; "
        f"{'a vmerpo store' if d['written_by_vmerpo'] else 'written by another tool'}, "
        f"{'with' if d['has_spec'] else 'no'} vmerpo spec)",
        f"data       {d['episodes']} episodes, {d['frames']} frames" + (
            f", length min {d['episode_length']['min']} / mean {d['episode_length']['mean']:.1f} / "
            f"max {d['episode_length']['max']}" if d["episode_length"] else ""),
        "",
        f"{'array':32s} {'shape':>22s} {'dtype':>8s} {'chunks':>18s}",
    ]
    for a in d["arrays"]:
        lines.append(f"{a['name']:32s} {'x'.join(map(str, a['shape'])):>22s} {a['dtype']:>8s} "
                     f"{'x'.join(map(str, a['chunks'])):>18s}")
    if d["keys"]:
        lines.append("")
        lines.append("keys       " + ", ".join(f"{k} <- {v}" for k, v in d["keys"].items()))
    for k, means in d["absent"].items():
        lines.append(f"absent     {k}: {means}")
    if d["leftover"]:
        lines.append(f"leftover   {', '.join(f'{k} {n}' for k, n in d['leftover'].items())} "
                     "rows past the last commit (`vmerpo repair` removes them)")
    lines.append("")
    if d["missing_for_training"]:
        lines.append("not yet trainable; missing:")
        lines += [f"  - {m}" for m in d["missing_for_training"]]
    else:
        lines.append("trainable: every verb reads it")
    return "\n".join(lines)


def _parse_task(text: str) -> dict[str, Any]:
    parts = text.split(":")
    try:
        tid = int(parts[0])
    except ValueError:
        raise ValueError(f"--task {text!r}: expected ID[:NAME[:SPLIT]] with an integer ID") from None
    task: dict[str, Any] = {"id": tid, "name": parts[1] if len(parts) > 1 and parts[1] else f"task {tid}",
                            "split": parts[2] if len(parts) > 2 else "train"}
    if task["split"] not in ("train", "test") or len(parts) > 3:
        raise ValueError(f"--task {text!r}: expected ID[:NAME[:SPLIT]] with SPLIT train or test")
    return task


def parse_key(text: str) -> tuple[str, str]:
    ours, _, theirs = text.partition("=")
    if not theirs or ours not in MAPPABLE_KEYS:
        raise ValueError(f"--key {text!r}: expected OURS=THEIRS with OURS one of {', '.join(MAPPABLE_KEYS)}")
    return ours, theirs


def infer_spec(path: str | os.PathLike, fields: Mapping[str, Any] | None = None,
               keys: Mapping[str, str] | None = None, tasks: Sequence[str] = ()) -> StoreSpec:
    """A spec for another tool's store: `fields` (from flags or a YAML file) as given, the rest
    from its arrays (image size, channel counts, the action range seen, the task ids), then
    checked by opening the store with it."""
    path = str(path)
    fields = dict(fields or {})
    file_keys, file_tasks = fields.pop("keys", None) or {}, fields.pop("tasks", None) or []
    if not isinstance(file_keys, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in file_keys.items()):
        raise _spec_type_error("keys", "an object of array names", file_keys)
    if not isinstance(file_tasks, (list, tuple)):
        raise _spec_type_error("tasks", "a list of task objects", file_tasks)
    d = describe(path, {**dict(file_keys), **dict(keys or {})})
    if d["written_by_vmerpo"]:
        raise StoreError(f"{path} is a vmerpo store: its spec is its writer's (`vmerpo inspect` shows it)")
    blocking = [m for m in d["missing_for_training"] if not m.startswith("a spec")]
    if blocking:
        raise StoreError(f"{path}: cannot be described: " + "; ".join(blocking))
    needs = [flag for f, flag in (("control_hz", "--control-hz HZ"), ("action_type", "--action-type TYPE"))
             if fields.get(f) is None]
    if needs:
        raise ValueError(f"{path}: the store cannot tell its rate and action type: pass {' and '.join(needs)} "
                         f"(action types: {', '.join(ACTION_TYPES)}) or give them in --from FILE")
    root = _open_group(path, "r")
    mapping = {k: d["keys"].get(k, k) for k in MAPPABLE_KEYS if k not in d["absent"]}
    shapes = {a["name"]: a["shape"] for a in d["arrays"]}
    image_shape = shapes[f"data/{mapping['image']}"]
    n_state = _channels(shapes[f"data/{mapping['state']}"], mapping["state"])
    n_action = _channels(shapes[f"data/{mapping['action']}"], mapping["action"])
    if "action_low" not in fields or "action_high" not in fields:
        actions = _read(root[f"data/{mapping['action']}"], path, f"data/{mapping['action']}",
                        slice(0, d["frames"])).reshape(d["frames"], -1).astype(np.float64)
        if not np.isfinite(actions).all():
            raise StoreError(f"{path}: data/{mapping['action']} has non-finite values; the action range "
                             "cannot be read from it (give --action-low/--action-high)")
        lo, hi = (actions.min(0), actions.max(0)) if len(actions) else (np.full(n_action, -1.0), np.full(n_action, 1.0))
        pad = np.where(hi > lo, 0.0, np.maximum(np.abs(lo), 1.0) * 1e-3)  # a constant channel
        fields.setdefault("action_low", [float(x) for x in lo - pad])
        fields.setdefault("action_high", [float(x) for x in hi + pad])
    table = [_parse_task(t) for t in tasks] or list(file_tasks)
    if not table:
        if "episode_task" in d["absent"]:
            table = [{"id": 0, "name": "task 0", "split": "train"}]
        else:
            name = f"meta/{mapping['episode_task']}"
            raw = _read(root[name], path, name, slice(0, d["episodes"]))
            if raw.ndim != 1 or raw.dtype.kind not in "iu":
                raise StoreError(f"{path}: {name} has entries of shape {tuple(raw.shape[1:])} and dtype "
                                 f"{raw.dtype}; task ids are one integer per episode (map another array "
                                 "with --key episode_task=NAME)")
            ids = np.unique(raw)
            table = [{"id": int(i), "name": f"task {int(i)}", "split": "train"} for i in ids]
    spec_fields: dict[str, Any] = {
        "robot": "unknown",
        "image_size": int(image_shape[1]),
        "state_names": [f"state_{i}" for i in range(n_state)],
        "action_names": [f"action_{i}" for i in range(n_action)],
        "reward_source": {"type": "array", "array": f"data/{mapping['reward']}"},
        "env": {"written_by": "another tool", "described_by": "vmerpo spec"},
        **fields,
        "tasks": table,
        "keys": {k: v for k, v in mapping.items() if k != v},
        "absent": list(d["absent"]),
    }
    spec = StoreSpec.from_attrs(spec_fields)
    for name, n in (("state_names", n_state), ("action_names", n_action)):
        if len(getattr(spec, name)) != n:
            raise ValueError(f"{name} has {len(getattr(spec, name))} names, the store's array has {n} channels")
    EpisodeStore.open(path, load="lazy", spec=spec)  # every check a reader makes, before anything is written
    return spec


def _channels(shape: list[int], name: str) -> int:
    if len(shape) != 2:
        raise StoreError(f"data/{name} has rows of shape {tuple(shape[1:])}; vmerpo reads a vector per row")
    return int(shape[1])


def write_spec(path: str | os.PathLike, spec: StoreSpec, force: bool = False) -> None:
    """Put `spec` into the attrs of another tool's store (its arrays are not touched), under the
    writer lock on local paths."""
    path = str(path)
    fd = None if _is_url(path) else _lock_store(path)
    try:
        root = _open_group(path, "r+")
        if written_by_vmerpo(root):
            raise StoreError(f"{path} is a vmerpo store: its spec is its writer's")
        if "spec" in root.attrs and not force:
            raise FileExistsError(f"{path} has a spec already; pass --force to replace it")
        root.attrs["spec"] = spec.to_attrs()
    finally:
        _unlock_store(fd)


def load_spec_file(file: str | os.PathLike) -> StoreSpec:
    """A StoreSpec from a YAML or JSON file (what `vmerpo spec --out FILE` writes); a field
    missing or of a wrong type is refused in one line naming the file."""
    fields = read_fields(file)
    missing = [n for n in SPEC_REQUIRED if n not in fields]
    if missing:
        raise StoreError(f"spec file {file} lacks {', '.join(missing)} (`vmerpo spec STORE --out FILE` "
                         "writes a complete one)")
    try:
        return StoreSpec.from_attrs(fields)
    except StoreError as e:
        raise StoreError(f"spec file {file}: {e}") from None


def read_fields(file: str | os.PathLike) -> dict[str, Any]:
    import yaml

    text = Path(file).read_text()
    try:
        fields = json.loads(text) if str(file).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{file}: not valid {'JSON' if str(file).endswith('.json') else 'YAML'} "
                         f"({str(e).splitlines()[0]})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{file}: a spec file holds one mapping of spec fields, got {type(fields).__name__}")
    import dataclasses

    known = {f.name for f in dataclasses.fields(StoreSpec)}
    unknown = sorted(set(fields) - known)
    if unknown:  # a typo (action_lowz) would otherwise fall back silently to a default
        raise ValueError(f"{file}: unknown spec field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         f"(fields: {', '.join(sorted(known))})")
    return fields


def dump_spec_file(spec: StoreSpec, file: str | os.PathLike) -> None:
    import yaml

    attrs = spec.to_attrs()
    text = json.dumps(attrs, indent=1) if str(file).endswith(".json") else yaml.safe_dump(attrs, sort_keys=False)
    Path(file).write_text(text)




def needs_description(path: str | os.PathLike) -> bool:
    """True for another tool's store with no spec (none in its attrs, none given by --spec FILE):
    `vmerpo inspect` then describes what it holds instead of refusing it."""
    from learning.store import spec_file_for

    path = str(path)
    try:
        if not _exists(path):
            return False
        if not _is_url(path):
            _scan_local(path)
        root = _open_group(path, "r")
        has_spec = "spec" in root.attrs
    except Exception:  # noqa: BLE001 - EpisodeStore.open says what is wrong, in one line
        return False
    return not written_by_vmerpo(root) and not has_spec and spec_file_for(path) is None
