"""The episode store (docs/architecture.md, contract 1): robot and simulator logs in zarr.

Layout of diffusion_policy's ReplayBuffer: `data/<key>` holds all episodes concatenated along
time and `meta/episode_ends` the cumulative end index of each episode. Appending to
`meta/episode_ends` is the commit point of an episode: data arrays are written first, then the
per-episode meta arrays, then `episode_ends`. Zarr's local store writes every file atomically
(temp file + rename), so a killed writer leaves at worst rows and meta entries beyond the last
commit, which the next writer truncates and every reader ignores.

Torch-free: the recorder node on the robot computer writes through this module.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

FORMAT_NAME = "vmerpo.episodes"
FORMAT_VERSION = 1

# data/<key>: dtype and trailing shape (from the spec) of every required array.
DATA_KEYS = ("image", "state", "action", "reward", "terminal", "timestamp")
META_KEYS = ("episode_ends", "episode_task", "episode_success")
_DTYPES = {
    "image": np.uint8,
    "state": np.float32,
    "action": np.float32,
    "reward": np.float32,
    "terminal": np.bool_,
    "timestamp": np.float64,
    "episode_ends": np.int64,
    "episode_task": np.int32,
    "episode_success": np.bool_,
}
ACTION_TYPES = ("ee_delta", "twist", "joint_position", "joint_velocity")
IMAGE_CHUNK_BYTES = 1 << 20  # ~1 MiB raw per image chunk: 85 frames of 64x64x3
LOWDIM_CHUNK_ROWS = 4096
# zarr skips chunks that hold only the fill value, and reads an absent chunk as fill values:
# a chunk lost in a copy would silently become zeros. Stores created by this writer write
# every chunk and say so in this attr; their readers then refuse a missing chunk.
COMPLETE_CHUNKS_ATTR = "complete_chunks"
_WRITE_ALL = {"write_empty_chunks": True}


class StoreError(ValueError):
    """A store that does not follow contract 1; the message names the array or episode."""


@dataclass
class StoreSpec:
    """Store-level attributes: what the robot, camera and action space are.

    Serialised into the zarr group's attrs, carried on into the ONNX spec of policies trained
    on the store, and checked when a writer appends to an existing store.
    """

    robot: str  # robot or simulator name, e.g. "sawyer (metaworld)"
    control_hz: float  # control ticks per second (one row per tick)
    image_size: int  # model image side; images are [image_size, image_size, 3] RGB
    state_names: list[str]  # proprioception channels of data/state
    action_names: list[str]  # channels of data/action
    action_low: list[float]  # action limits, robot units
    action_high: list[float]
    action_type: str = "ee_delta"  # ee_delta | twist | joint_position | joint_velocity
    action_units: str = ""  # e.g. "m per step (scaled by 0.01)"
    action_frame: str = "world"
    gripper_channel: int | None = None  # index of the gripper channel in action, if any
    hold_action: list[float] | str | None = None  # zeros for delta/velocity; "current position"
    camera: dict[str, Any] = field(default_factory=dict)  # name, crop, encoding, intrinsics
    reward_source: dict[str, Any] = field(default_factory=lambda: {"type": "unknown"})
    tasks: list[dict[str, Any]] = field(default_factory=list)  # id, name, params, split
    env: dict[str, Any] = field(default_factory=dict)  # free-form: family, episode cap, ...
    alignment: str = (
        "row t: observation at tick t (image + state), the action commanded in response, "
        "the reward of the transition t -> t+1; terminal = true termination only"
    )

    def __post_init__(self) -> None:
        if len(self.action_low) != len(self.action_names) or len(self.action_high) != len(
            self.action_names
        ):
            raise StoreError(
                f"action limits have {len(self.action_low)}/{len(self.action_high)} entries "
                f"but there are {len(self.action_names)} action names"
            )
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
            raise StoreError("every action_low must be below its action_high")
        if self.action_type not in ACTION_TYPES:
            raise StoreError(f"action_type {self.action_type!r} not one of {ACTION_TYPES}")
        if self.image_size <= 0 or self.control_hz <= 0:
            raise StoreError("image_size and control_hz must be positive")
        ids = [int(t["id"]) for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise StoreError("task table has duplicate task ids")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    def trailing_shape(self, key: str) -> tuple[int, ...]:
        return {
            "image": self.image_shape,
            "state": (len(self.state_names),),
            "action": (len(self.action_names),),
        }.get(key, ())

    def task_ids(self, split: str | None = None) -> list[int]:
        return [int(t["id"]) for t in self.tasks if split is None or t.get("split") == split]

    def to_attrs(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StoreSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("robot", "control_hz", "image_size", "state_names",
                               "action_names", "action_low", "action_high") if n not in attrs]
        if missing:
            raise StoreError(f"store attrs lack {', '.join(missing)}")
        return cls(**{k: v for k, v in attrs.items() if k in names})

    def compatibility_errors(self, other: StoreSpec) -> list[str]:
        """What differs in the fields that make two stores' rows interchangeable."""
        keys = ("image_size", "state_names", "action_names", "action_low", "action_high",
                "action_type", "control_hz")
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return [f"{k}: store has {a[k]!r}, writer has {b[k]!r}" for k in keys if a[k] != b[k]]


def _is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def _open_group(path: str | os.PathLike, mode: str, storage_options: dict | None = None,
                zarr_format: int | None = None):
    kwargs: dict[str, Any] = {"mode": mode}
    if zarr_format is not None:
        kwargs["zarr_format"] = zarr_format
    if _is_url(path):
        kwargs["storage_options"] = storage_options or {}
    return zarr.open_group(str(path), **kwargs)


def _compressor(zarr_format: int, image: bool):
    # zstd for everything (contract 1); bit-shuffle helps floats, plain shuffle for bytes.
    if zarr_format == 2:
        import numcodecs

        shuffle = numcodecs.Blosc.NOSHUFFLE if image else numcodecs.Blosc.SHUFFLE
        return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=shuffle)
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle" if image else "shuffle")


def _chunk_rows(trailing: tuple[int, ...], itemsize: int) -> int:
    row_bytes = int(np.prod(trailing, dtype=np.int64)) * itemsize if trailing else itemsize
    if len(trailing) >= 2:  # images: about 1 MiB per chunk, at least one frame
        return max(1, min(1024, IMAGE_CHUNK_BYTES // max(row_bytes, 1)))
    return LOWDIM_CHUNK_ROWS


_MISSING = {"bool": False, "int64": -1, "float64": np.nan, "category": -1}


def _encode_provenance(value: Any) -> tuple[Any, str]:
    if isinstance(value, (bool, np.bool_)):
        return bool(value), "bool"
    if isinstance(value, (int, np.integer)):
        return int(value), "int64"
    if isinstance(value, (float, np.floating)):
        return float(value), "float64"
    return str(value), "category"


class EpisodeWriter:
    """Appends whole episodes to a store; the only code that writes contract-1 stores.

    mode "w": create a new store (refuses an existing path unless overwrite=True).
    mode "a": append to an existing store (created if missing); drops an uncommitted tail
              left by a killed writer, and checks that `spec` is compatible.
    One writer per store at a time (an advisory lock on local paths).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        spec: StoreSpec | None = None,
        mode: str = "a",
        overwrite: bool = False,
        zarr_format: int = 2,
        storage_options: dict | None = None,
        log: Callable[[str], object] | None = None,
        durable: bool = True,
    ) -> None:
        self.path = str(path)
        # Commits are durable on local paths: the episode's data and meta are fsynced before
        # the commit point is appended, and the commit point after (docs/robustness.md).
        self.durable = bool(durable) and not _is_url(self.path)
        self._synced_ns = time.time_ns()
        self._storage_options = storage_options
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self._lock_fd: int | None = None
        if mode not in ("w", "a"):
            raise ValueError(f"writer mode must be 'w' or 'a', got {mode!r}")
        exists = _exists(self.path, storage_options)
        if mode == "w" and exists and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite (--overwrite) or append")
        if not exists or (mode == "w" and overwrite):
            if spec is None:
                raise StoreError(f"creating {self.path} needs a StoreSpec")
            if zarr_format not in (2, 3):
                raise StoreError(f"zarr_format must be 2 or 3, got {zarr_format}")
            self.root = _open_group(self.path, "w", storage_options, zarr_format)
            self._acquire_lock()
            self._create(spec, zarr_format)
        else:
            self.root = _open_group(self.path, "r+", storage_options)
            self._acquire_lock()
            stored = _read_spec(self.root, self.path)
            if spec is not None:
                diff = stored.compatibility_errors(spec)
                if diff:
                    raise StoreError(f"{self.path} is incompatible with this writer: {diff[0]}")
            self._recover()
        self.spec = StoreSpec.from_attrs(self.root.attrs["spec"])
        self._load_handles()

    def _load_handles(self) -> None:
        # Array handles, cached: a group lookup re-reads metadata from the store each time.
        self._handles = {f"{g}/{n}": a.with_config(_WRITE_ALL) for g in ("data", "meta")
                         for n, a in self.root[g].arrays()}
        self._ends = [int(x) for x in self._handles["meta/episode_ends"][:]]

    def reopen(self) -> None:
        """After a failed write (a full disk): drop whatever the failure left beyond the last
        committed episode and reload the array handles, as a new writer would. Raises OSError
        if the store is still not writable."""
        self.root = _open_group(self.path, "r+", self._storage_options)
        self._recover()
        self._load_handles()

    # -- creation and recovery --------------------------------------------------------------
    def _create(self, spec: StoreSpec, zarr_format: int) -> None:
        self.root.attrs.update(
            {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "spec": spec.to_attrs(),
             COMPLETE_CHUNKS_ATTR: True}
        )
        for key in DATA_KEYS:
            trailing = spec.trailing_shape(key)
            dtype = np.dtype(_DTYPES[key])
            self.root.create_array(
                f"data/{key}", shape=(0, *trailing), dtype=dtype,
                chunks=(_chunk_rows(trailing, dtype.itemsize), *trailing),
                compressors=_compressor(zarr_format, key == "image"),
            )
        for key in META_KEYS:
            self._create_meta(key, np.dtype(_DTYPES[key]), zarr_format)

    def _create_meta(self, key: str, dtype: np.dtype, zarr_format: int | None = None):
        fmt = zarr_format or self.root.metadata.zarr_format
        arr = self.root.create_array(
            f"meta/{key}", shape=(0,), dtype=dtype, chunks=(LOWDIM_CHUNK_ROWS,),
            compressors=_compressor(fmt, False), config=_WRITE_ALL,
        )
        if hasattr(self, "_handles"):
            self._handles[f"meta/{key}"] = arr
        return arr

    def _array(self, name: str):
        return self._handles[name]

    def _recover(self) -> None:
        """Truncate whatever a killed writer left beyond the last committed episode."""
        ends = np.asarray(self.root["meta/episode_ends"][:], dtype=np.int64)
        n_data = min((a.shape[0] for _, a in self.root["data"].arrays()), default=0)
        valid = _committed_prefix(ends)
        if valid < len(ends) - 1:
            raise StoreError(f"{self.path}: meta/episode_ends is not strictly increasing at "
                             f"episode {valid}; the store is damaged")
        committed_rows = int(ends[valid - 1]) if valid else 0
        if committed_rows > n_data:
            raise StoreError(f"{self.path}: meta/episode_ends commits {committed_rows} rows but a "
                             f"data array has only {n_data}; the store is damaged")
        dropped_rows = 0
        for key in list(self._array_names("data")):
            arr = self.root[f"data/{key}"]
            if arr.shape[0] > committed_rows:
                dropped_rows = max(dropped_rows, arr.shape[0] - committed_rows)
                arr.resize((committed_rows, *arr.shape[1:]))
        for key in list(self._array_names("meta")):
            arr = self.root[f"meta/{key}"]
            if arr.shape[0] > valid:
                arr.resize((valid,))
        if dropped_rows or valid < len(ends):
            self.log(
                f"{self.path}: dropped an incomplete episode left by an interrupted writer "
                f"({dropped_rows} uncommitted rows); {valid} committed episodes kept"
            )
        if not _is_url(self.path):  # temp files of an interrupted atomic write
            for partial in Path(self.path).rglob("*.partial"):
                partial.unlink(missing_ok=True)

    def _array_names(self, group: str) -> Iterable[str]:
        if group not in self.root:
            return []
        return [name for name, _ in self.root[group].arrays()]

    def _acquire_lock(self) -> None:
        if _is_url(self.path):
            return
        lock_path = Path(self.path) / ".vmerpo-writer.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.path} is being written by another process") from None
        self._lock_fd = fd

    # -- writing -----------------------------------------------------------------------------
    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_frames(self) -> int:
        return self._ends[-1] if self._ends else 0

    def check_episode(self, data: Mapping[str, np.ndarray]) -> int:
        """Validate one episode's arrays against the spec; returns its length."""
        missing = [k for k in DATA_KEYS if k not in data]
        if missing:
            raise StoreError(f"episode lacks data/{missing[0]}")
        length = len(data["image"])
        if length == 0:
            raise StoreError("episode has no frames")
        for key, value in data.items():
            value = np.asarray(value)
            if key in _DTYPES and value.dtype != _DTYPES[key]:
                if not np.can_cast(value.dtype, _DTYPES[key], casting="same_kind"):
                    raise StoreError(f"data/{key}: dtype {value.dtype}, expected {np.dtype(_DTYPES[key])}")
            expected = (length, *self.spec.trailing_shape(key)) if key in DATA_KEYS else None
            if expected is not None and value.shape != expected:
                raise StoreError(f"data/{key}: shape {value.shape}, expected {expected}")
            if len(value) != length:
                raise StoreError(f"data/{key}: {len(value)} rows, data/image has {length}")
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise StoreError(f"data/{key}: non-finite value (NaN or inf)")
        return length

    def add_episode(
        self,
        data: Mapping[str, np.ndarray],
        task_id: int,
        success: bool,
        provenance: Mapping[str, Any] | None = None,
    ) -> int:
        """Write one whole episode and commit it. Returns the new episode's index."""
        length = self.check_episode(data)
        known = self.spec.task_ids()
        if known and int(task_id) not in known:
            raise StoreError(f"task id {task_id} is not in the store's task table {known}")
        start = self.n_frames
        # 1. data rows (extra keys, e.g. a second camera, become data/<key> arrays too)
        for key, value in data.items():
            value = np.asarray(value)
            if key in _DTYPES:
                value = value.astype(_DTYPES[key], copy=False)
            if f"data/{key}" not in self._handles:
                if start:
                    raise StoreError(f"data/{key} is new but the store already has {start} rows")
                self._handles[f"data/{key}"] = self.root.create_array(
                    f"data/{key}", shape=(0, *value.shape[1:]), dtype=value.dtype,
                    chunks=(_chunk_rows(value.shape[1:], value.dtype.itemsize), *value.shape[1:]),
                    compressors=_compressor(self.root.metadata.zarr_format, value.ndim >= 3),
                    config=_WRITE_ALL,
                )
            arr = self._array(f"data/{key}")
            if arr.shape[0] != start:
                raise StoreError(f"data/{key} has {arr.shape[0]} rows, expected {start}")
            arr.append(value)
        return self._commit(task_id, success, provenance, start + length)

    def _commit(self, task_id: int, success: bool, provenance: Mapping[str, Any] | None,
                end: int) -> int:
        """Per-episode meta first, then the commit point: appending to meta/episode_ends."""
        self._append_meta("episode_task", np.int32(task_id))
        self._append_meta("episode_success", np.bool_(success))
        provenance = dict(provenance or {})
        for key in [k for k in self._handles if k.startswith("meta/episode_")]:
            name = key[len("meta/episode_"):]
            if f"episode_{name}" not in META_KEYS and name not in provenance:
                provenance[name] = None  # this episode does not say: a missing marker
        for name, value in provenance.items():
            self._append_provenance(name, value)
        if self.durable:  # the episode first, then the commit point alone
            self._fsync_changed(self._handles.keys() - {"meta/episode_ends"})
        self._append_meta("episode_ends", np.int64(end))
        if self.durable:
            self._fsync_changed(["meta/episode_ends"])
            self._synced_ns = time.time_ns()
        self._ends.append(end)
        return len(self._ends) - 1

    def _fsync_changed(self, names: Iterable[str]) -> None:
        """fsync the files of these arrays changed since the last commit, and their
        directories (new chunk files are created by rename). Local stores only."""
        since = self._synced_ns - 2_000_000_000  # filesystem timestamps are coarse
        root = Path(self.path)
        dirs: set[Path] = set()
        for name in names:
            top = root / name
            for dirpath, _, files in os.walk(top):
                for f in files:
                    p = Path(dirpath) / f
                    try:
                        if p.stat().st_mtime_ns < since:
                            continue
                    except FileNotFoundError:
                        continue
                    fd = os.open(p, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    dirs.add(Path(dirpath))
            dirs.add(top)
        for d in dirs:
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _append_meta(self, key: str, value: Any) -> None:
        arr = self._array(f"meta/{key}")
        if arr.shape[0] != self.n_episodes:
            raise StoreError(f"meta/{key} has {arr.shape[0]} entries, expected {self.n_episodes}")
        arr.append(np.asarray([value], dtype=arr.dtype))

    def _append_provenance(self, name: str, value: Any) -> None:
        key = f"episode_{name}"
        if key in META_KEYS:
            raise StoreError(f"provenance name {name!r} is reserved")
        if value is None:
            kind = self._handles[f"meta/{key}"].attrs.get("kind")
            self._append_meta(key, _MISSING[kind])
            return
        value, kind = _encode_provenance(value)
        if f"meta/{key}" not in self._handles:
            dtype = np.dtype({"bool": np.bool_, "int64": np.int64, "float64": np.float64,
                              "category": np.int32}[kind])
            arr = self._create_meta(key, dtype)
            arr.attrs["kind"] = kind
            if kind == "category":
                arr.attrs["categories"] = []
            # episodes written before this key existed get a missing marker
            if self.n_episodes:
                fill = _MISSING[kind]
                arr.append(np.full(self.n_episodes, fill, dtype=dtype))
        arr = self._array(f"meta/{key}")
        if arr.attrs.get("kind") == "category":
            cats = list(arr.attrs.get("categories", []))
            if value not in cats:
                cats.append(value)
                arr.attrs["categories"] = cats
            value = cats.index(value)
        self._append_meta(key, value)

    def stream_episode(self, task_id: int, provenance: Mapping[str, Any] | None = None) -> EpisodeStream:
        """Start an episode whose frames arrive one at a time (recorder, long recordings)."""
        return EpisodeStream(self, task_id, provenance)

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EpisodeStream:
    """Frames of one episode written chunk by chunk; nothing counts until `commit`.

    Rows go to the data arrays as soon as a chunk's worth has arrived, so a long recording
    never sits in RAM; they stay uncommitted (invisible to readers, truncated by the next
    writer) until `commit(success)` appends to `meta/episode_ends`.
    """

    def __init__(self, writer: EpisodeWriter, task_id: int, provenance: Mapping[str, Any] | None):
        self.writer = writer
        self.task_id = task_id
        self.provenance = dict(provenance or {})
        self.start = writer.n_frames
        self.length = 0
        self._buffer: list[dict[str, np.ndarray]] = []
        image_chunk = writer._array("data/image").chunks[0]
        self._flush_rows = max(1, image_chunk)
        self._done = False

    def append(self, frame: Mapping[str, Any]) -> None:
        """One row: image [H,W,3] u8, state [S], action [A], reward, terminal, timestamp."""
        if self._done:
            raise StoreError("episode already committed or discarded")
        row = {k: np.asarray(v)[None] for k, v in frame.items()}
        self.writer.check_episode(row)
        self._buffer.append(row)
        if len(self._buffer) >= self._flush_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        keys = self._buffer[0].keys()
        block = {k: np.concatenate([r[k] for r in self._buffer]) for k in keys}
        for key, value in block.items():
            arr = self.writer._array(f"data/{key}")
            if arr.shape[0] != self.start + self.length:
                raise StoreError(f"data/{key} changed under a streaming episode")
            arr.append(value.astype(arr.dtype, copy=False))
        self.length += len(self._buffer)
        self._buffer = []

    def commit(self, success: bool, provenance: Mapping[str, Any] | None = None) -> int:
        """Commit the episode; `provenance` adds to (or overrides) what was given at the start
        (e.g. how the episode ended)."""
        self._flush()
        if self.length == 0:
            raise StoreError("cannot commit an episode with no frames")
        self._done = True
        return self.writer._commit(self.task_id, success, {**self.provenance, **dict(provenance or {})},
                                   self.start + self.length)

    def discard(self) -> None:
        """Drop the rows written so far (e.g. an episode aborted by the operator)."""
        for key in self.writer._array_names("data"):
            arr = self.writer._array(f"data/{key}")
            if arr.shape[0] > self.start:
                arr.resize((self.start, *arr.shape[1:]))
        self._buffer = []
        self._done = True


def _committed_prefix(ends: np.ndarray) -> int:
    """Number of leading episode_ends entries that are strictly increasing.

    A writer killed inside the append of the commit entry leaves one trailing fill value (0),
    never a value beyond the data rows (data is written before the commit)."""
    prev = 0
    for i, e in enumerate(ends):
        if e <= prev:
            return i
        prev = int(e)
    return len(ends)


def _missing_chunks(arr: Any, rows: int) -> list[tuple[tuple[int, ...], slice]]:
    """(chunk coordinates, row range) of the chunks covering rows [0, rows) that the store
    lacks; one listing of the array's keys (cheap on object stores too)."""
    from zarr.core.sync import sync

    sp = arr.store_path
    prefix = f"{sp.path}/" if sp.path else ""

    async def keys() -> set[str]:
        return {k async for k in sp.store.list_prefix(prefix)}

    present = sync(keys())
    out = []
    for coords, region in zip(arr._iter_chunk_coords(), arr._iter_chunk_regions(), strict=True):
        if region[0].start < rows and prefix + arr.metadata.encode_chunk_key(coords) not in present:
            out.append((coords, region[0]))
    return out


def _exists(path: str, storage_options: dict | None = None) -> bool:
    if not _is_url(path):
        p = Path(path)
        return p.exists() and any(p.iterdir()) if p.is_dir() else p.exists()
    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs.exists(root)


def _read_spec(root, path: str) -> StoreSpec:
    attrs = dict(root.attrs)
    if "spec" in attrs:
        return StoreSpec.from_attrs(attrs["spec"])
    raise StoreError(f"{path}: group attrs have no 'spec' (not written by vmerpo; use "
                     "EpisodeStore.open(..., spec=StoreSpec(...)) to describe it)")


class ChunkCache:
    """LRU cache of decompressed chunks with a byte budget (lazy reads of large stores)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, int], load: Callable[[], np.ndarray]) -> np.ndarray:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return item
        self.misses += 1
        item = load()
        self._items[key] = item
        self.bytes += item.nbytes
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.nbytes
        return item


class EpisodeStore:
    """Validated read access to a contract-1 store (zarr format 2 or 3, local or fsspec URL).

    load="memory" decompresses every array into RAM (fast sampling of small stores),
    load="lazy" reads chunk-aligned windows through a bounded cache of decompressed chunks
    (stores larger than RAM), load="auto" picks memory when the data fits in `memory_limit_mb`.
    Low-dimensional arrays are always loaded (they are small and are checked for NaN).
    """

    def __init__(self, root, path: str, spec: StoreSpec, load: str, cache_mb: float) -> None:
        self.root = root
        self.path = path
        self.spec = spec
        self.load_mode = load
        self.cache = ChunkCache(int(cache_mb * 2**20))
        self._arrays: dict[str, Any] = {}
        self._memory: dict[str, np.ndarray] = {}

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        load: str = "auto",
        memory_limit_mb: float = 4096,
        cache_mb: float = 512,
        spec: StoreSpec | None = None,
        storage_options: dict | None = None,
    ) -> EpisodeStore:
        path = str(path)
        if load not in ("auto", "memory", "lazy"):
            raise ValueError(f"load must be auto, memory or lazy, got {load!r}")
        if not _exists(path, storage_options):
            raise FileNotFoundError(f"{path}: no such episode store")
        try:
            root = _open_group(path, "r", storage_options)
        except Exception as e:  # zarr raises several types for a non-store path
            raise StoreError(f"{path}: not a zarr group ({type(e).__name__}: {e})") from None
        if spec is None:
            spec = _read_spec(root, path)
        store = cls(root, path, spec, load, cache_mb)
        store._validate_layout()
        raw_bytes = sum(
            int(np.prod(a.shape, dtype=np.int64)) * a.dtype.itemsize for a in store._arrays.values()
        )
        if load == "auto":
            store.load_mode = "memory" if raw_bytes <= memory_limit_mb * 2**20 else "lazy"
        store._load_lowdim()
        if store.load_mode == "memory":
            for key in store.data_keys:
                if key not in store._memory:
                    store._memory[key] = store._read_full(key)
        return store

    # -- validation ---------------------------------------------------------------------------
    def _has(self, name: str) -> bool:
        try:
            return name in self.root
        except Exception as e:  # garbled .zarray / zarr.json
            raise StoreError(f"{self.path}: cannot read the metadata of {name} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None

    def _members(self, group: str) -> list[tuple[str, Any]]:
        try:
            return list(self.root[group].arrays())
        except Exception as e:
            raise StoreError(f"{self.path}: cannot read the array metadata under {group}/ "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})") from None

    def _check_chunks(self, name: str, arr: Any, rows: int) -> None:
        """Every chunk holding committed rows must exist (stores that write all chunks)."""
        if not rows or not self.root.attrs.get(COMPLETE_CHUNKS_ATTR, False):
            return
        missing = _missing_chunks(arr, rows)
        if missing:
            coords, region = missing[0]
            raise StoreError(f"{self.path}: {name} lacks chunk {'.'.join(map(str, coords))} (rows "
                             f"{region.start}-{min(region.stop, rows) - 1}); the store is damaged or "
                             "incompletely copied")

    def _validate_layout(self) -> None:
        for key in META_KEYS:
            if not self._has(f"meta/{key}"):
                raise StoreError(f"{self.path}: missing array meta/{key}")
        ends = np.asarray(self._read_array("meta/episode_ends"), dtype=np.int64)
        valid = _committed_prefix(ends)
        # A killed writer can leave exactly one half-appended entry at the end; anything
        # else out of order is damage.
        if valid < len(ends) - 1:
            raise StoreError(f"{self.path}: meta/episode_ends is not strictly increasing at "
                             f"episode {valid}")
        ends = ends[:valid]
        self.episode_ends = ends
        n_frames = int(ends[-1]) if len(ends) else 0
        n_eps = len(ends)
        self._check_chunks("meta/episode_ends", self.root["meta/episode_ends"], n_eps)
        for key in DATA_KEYS:
            name = f"data/{key}"
            if not self._has(name):
                raise StoreError(f"{self.path}: missing array {name}")
        for name, arr in self._members("data"):
            self._arrays[name] = arr
            # rows beyond the last commit are an interrupted episode: ignored by readers
            if arr.shape[0] < n_frames:
                ep = int(np.searchsorted(ends, arr.shape[0], side="right"))
                raise StoreError(
                    f"{self.path}: data/{name} has {arr.shape[0]} rows but meta/episode_ends "
                    f"commits {n_frames} (episode {ep} is cut short)"
                )
            if name in _DTYPES and arr.dtype != _DTYPES[name]:
                raise StoreError(f"{self.path}: data/{name} has dtype {arr.dtype}, expected "
                                 f"{np.dtype(_DTYPES[name])}")
            expected = self.spec.trailing_shape(name)
            if name in DATA_KEYS and tuple(arr.shape[1:]) != expected:
                raise StoreError(f"{self.path}: data/{name} has rows of shape {tuple(arr.shape[1:])}, "
                                 f"the store attrs say {expected}")
            self._check_chunks(f"data/{name}", arr, n_frames)
        for name, arr in self._members("meta"):
            if arr.shape[0] < n_eps:
                raise StoreError(f"{self.path}: meta/{name} has {arr.shape[0]} entries for "
                                 f"{n_eps} episodes")
            self._check_chunks(f"meta/{name}", arr, n_eps)

    def _read_array(self, name: str, sl: slice = slice(None)) -> np.ndarray:
        try:
            return np.asarray(self.root[name][sl])
        except StoreError:
            raise
        except Exception as e:  # decompression errors, truncated/missing chunks
            raise StoreError(f"{self.path}: cannot read {name} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'damaged chunk'})") from None

    def _read_full(self, key: str) -> np.ndarray:
        return self._read_array(f"data/{key}", slice(0, self.n_frames))

    def _load_lowdim(self) -> None:
        for key, arr in self._arrays.items():
            if arr.ndim <= 2:
                values = self._read_full(key)
                if values.dtype.kind == "f":
                    bad = ~np.isfinite(values)
                    if bad.any():
                        row = int(np.argwhere(bad)[0][0])
                        ep = int(np.searchsorted(self.episode_ends, row, side="right"))
                        raise StoreError(f"{self.path}: data/{key} has a non-finite value "
                                         f"(NaN/inf) at row {row}, episode {ep}")
                self._memory[key] = values
        E = self.n_episodes
        self.episode_task = self._read_array("meta/episode_task", slice(0, E)).astype(np.int64)
        self.episode_success = self._read_array("meta/episode_success", slice(0, E)).astype(bool)
        known = set(self.spec.task_ids())
        if known:
            unknown = sorted(set(self.episode_task.tolist()) - known)
            if unknown:
                raise StoreError(f"{self.path}: meta/episode_task has task id {unknown[0]} that is "
                                 "not in the task table")

    def verify(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Decompress every chunk of every array (images too); raises StoreError on damage."""
        for key, arr in self._arrays.items():
            if key in self._memory:
                continue
            step = arr.chunks[0] * 16
            for start in range(0, self.n_frames, step):
                self._read_array(f"data/{key}", slice(start, min(start + step, self.n_frames)))
                if progress:
                    progress(min(start + step, self.n_frames), self.n_frames)

    # -- access ------------------------------------------------------------------------------
    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends])).astype(np.int64)

    @property
    def data_keys(self) -> list[str]:
        return list(self._arrays)

    def array_shape(self, key: str) -> tuple[int, ...]:
        return (self.n_frames, *self._arrays[key].shape[1:])

    def chunk_rows(self, key: str) -> int:
        return int(self._arrays[key].chunks[0])

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of data/<key>; lazy mode assembles them from cached chunks."""
        if key in self._memory:
            return self._memory[key][start:stop]
        if key not in self._arrays:
            raise KeyError(f"{self.path}: no array data/{key}")
        cs = self.chunk_rows(key)
        first, last = start // cs, (stop - 1) // cs
        parts = []
        for c in range(first, last + 1):
            chunk = self.cache.get(
                (key, c),
                lambda c=c: self._read_array(  # type: ignore[misc]  # c bound per chunk
                    f"data/{key}", slice(c * cs, min((c + 1) * cs, self.n_frames))),
            )
            lo = max(start - c * cs, 0)
            hi = min(stop - c * cs, len(chunk))
            parts.append(chunk[lo:hi])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range ({self.n_episodes} episodes)")
        i %= self.n_episodes
        s, e = int(self.episode_starts[i]), int(self.episode_ends[i])
        return {k: self.read(k, s, e) for k in (keys or self.data_keys)}

    def provenance(self, name: str) -> np.ndarray:
        """Per-episode provenance values (categories decoded to strings)."""
        key = f"meta/episode_{name}"
        if key not in self.root:
            raise KeyError(f"{self.path}: no per-episode provenance {name!r}")
        arr = self.root[key]
        values = self._read_array(key, slice(0, self.n_episodes))
        if arr.attrs.get("kind") == "category":
            cats = list(arr.attrs.get("categories", []))
            return np.array([cats[v] if 0 <= v < len(cats) else "" for v in values], dtype=object)
        return values

    def provenance_names(self) -> list[str]:
        return sorted(
            n[len("episode_"):] for n, _ in self.root["meta"].arrays()
            if n.startswith("episode_") and n not in META_KEYS
        )

    def episode_returns(self) -> np.ndarray:
        rewards = self._memory["reward"]
        return np.add.reduceat(rewards, self.episode_starts) if self.n_episodes else np.zeros(0)

    @property
    def zarr_format(self) -> int:
        return int(self.root.metadata.zarr_format)
