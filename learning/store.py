"""The episode store (docs/architecture.md, contract 1): robot and simulator logs in zarr.

Layout of diffusion_policy's ReplayBuffer: `data/<key>` holds all episodes concatenated along
time and `meta/episode_ends` the cumulative end index of each episode. Appending to
`meta/episode_ends` is the commit point of an episode: data arrays are written first, then the
per-episode meta arrays, then `episode_ends`. Zarr's local store writes every file atomically
(temp file + rename), so a killed writer leaves at worst rows and meta entries beyond the last
commit, which every reader ignores, `inspect` reports, and the next writer or `vmerpo repair`
(`repair_store`) truncates.

Stores are untrusted input: symlinks and special files inside a store are refused before
anything is read or written; what array metadata declares is checked against the commit in time
and memory bounded by the files present (`_commit_state`); only a trailing 0 in
meta/episode_ends is taken for a commit cut short; no read allocates more than the machine has.

Torch-free: the recorder node on the robot computer writes through this module.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import numbers
import os
import stat
import sys
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
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
# Stores written by other tools (diffusion_policy's ReplayBuffer and the like): their arrays may
# carry other names (StoreSpec.keys maps ours to theirs), and these may be absent
# (StoreSpec.absent), read as: no terminations, row times from control_hz, every episode the
# table's one task, success unknown (False).
OPTIONAL_KEYS = ("terminal", "timestamp", "episode_task", "episode_success")
MAPPABLE_KEYS = DATA_KEYS + ("episode_task", "episode_success")
IMAGE_CHUNK_BYTES = 1 << 20  # ~1 MiB raw per image chunk: 85 frames of 64x64x3
LOWDIM_CHUNK_ROWS = 4096
# zarr skips chunks that hold only the fill value, and reads an absent chunk as fill values:
# a chunk lost in a copy would silently become zeros. Stores created by this writer write
# every chunk and say so in this attr; their readers then refuse a missing chunk.
COMPLETE_CHUNKS_ATTR = "complete_chunks"
_WRITE_ALL = {"write_empty_chunks": True}
# Untrusted stores (docs/robustness.md): bounds on what array metadata may declare. A killed
# writer leaves at most the one episode it was writing beyond the last commit; a declared length
# further past the commit could not have been written and is refused without touching chunks.
MAX_LEFTOVER_ROWS = 1 << 24  # 16.7 M rows: 46 hours at 100 Hz in one uncommitted episode
MAX_CHUNK_BYTES = 1 << 31  # one decoded chunk (vmerpo writes ~1 MiB); Blosc's own limit is 2 GiB
_LARGE_READ_BYTES = 1 << 28  # reads above this are checked against the machine's memory
_ENDS_WINDOW = 1 << 16  # meta/episode_ends is read in windows of this many entries


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
    # Only for stores written by other tools (`vmerpo spec`): our array name -> theirs (under
    # data/, or meta/ for episode_task/episode_success), and the OPTIONAL_KEYS they lack.
    keys: dict[str, str] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._check_types()
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
        bad = sorted(set(self.keys) - set(MAPPABLE_KEYS))
        if bad:
            raise StoreError(f"spec keys maps {bad[0]!r}, which is not one of {', '.join(MAPPABLE_KEYS)}")
        odd = [v for v in self.keys.values() if not v or "/" in v or v.startswith(".")]
        if odd:
            raise StoreError(f"spec keys maps to {odd[0]!r}: give an array name under data/ or meta/ "
                             "(no '/', not starting with '.')")
        bad = sorted(set(self.absent) - set(OPTIONAL_KEYS))
        if bad:
            raise StoreError(f"spec absent lists {bad[0]!r}; only {', '.join(OPTIONAL_KEYS)} may be absent "
                             "(image, state, action and reward are needed to learn)")
        both = sorted(set(self.keys) & set(self.absent))
        if both:
            raise StoreError(f"spec keys maps {both[0]!r} to {self.keys[both[0]]!r} and absent lists it too; "
                             "give one of them")
        if "episode_task" in self.absent and len(self.tasks) != 1:
            raise StoreError(f"spec absent lists episode_task, so every episode is one task, but the task "
                             f"table has {len(self.tasks)}; give exactly one task")

    @property
    def foreign(self) -> bool:
        """True for the spec of a store written by another tool (keys mapped or arrays absent)."""
        return bool(self.keys or self.absent)

    def array_name(self, key: str) -> str:
        """The store's array of our `key`: data/<name> or meta/<name>."""
        group = "meta" if key in META_KEYS else "data"
        return f"{group}/{self.keys.get(key, key)}"

    def _check_types(self) -> None:
        """Every field's type, so that a spec read from a file fails with one line naming the
        field (never a TypeError later, never silently accepted). numpy scalars count as
        numbers; sequences are lists or tuples."""
        for name in ("robot", "action_type", "action_units", "action_frame", "alignment"):
            if not isinstance(getattr(self, name), str):
                raise _spec_type_error(name, "a string", getattr(self, name))
        if not _is_real(self.control_hz) or not math.isfinite(self.control_hz):
            raise _spec_type_error("control_hz", "a finite number", self.control_hz)
        if not _is_int(self.image_size):
            raise _spec_type_error("image_size", "an integer", self.image_size)
        for name in ("state_names", "action_names"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
                raise _spec_type_error(name, "a list of strings", value)
        for name in ("action_low", "action_high"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(_is_real(x) and not math.isnan(x)
                                                              for x in value):
                raise _spec_type_error(name, "a list of numbers", value)
        if self.gripper_channel is not None and not (
                _is_int(self.gripper_channel) and 0 <= self.gripper_channel < len(self.action_names)):
            raise _spec_type_error("gripper_channel", f"null or an action index 0..{len(self.action_names) - 1}",
                                   self.gripper_channel)
        hold = self.hold_action
        if not (hold is None or isinstance(hold, str) or (
                isinstance(hold, (list, tuple)) and all(_is_real(x) for x in hold))):
            raise _spec_type_error("hold_action", "null, a string or a list of numbers", hold)
        for name in ("camera", "reward_source", "env"):
            if not isinstance(getattr(self, name), Mapping):
                raise _spec_type_error(name, "a JSON object", getattr(self, name))
        if not isinstance(self.keys, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.keys.items()):
            raise _spec_type_error("keys", "an object of array names", self.keys)
        if not isinstance(self.absent, (list, tuple)) or not all(isinstance(x, str) for x in self.absent):
            raise _spec_type_error("absent", "a list of array names", self.absent)
        if not isinstance(self.tasks, (list, tuple)):
            raise _spec_type_error("tasks", "a list of task objects", self.tasks)
        for i, task in enumerate(self.tasks):
            if not isinstance(task, Mapping) or not _is_int(task.get("id")):
                raise _spec_type_error(f"tasks[{i}]", 'an object with an integer "id"', task)
            for key in ("name", "split"):
                if key in task and not isinstance(task[key], str):
                    raise _spec_type_error(f"tasks[{i}].{key}", "a string", task[key])

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
        attrs = json.loads(json.dumps(dataclasses.asdict(self)))
        for name in ("keys", "absent"):  # only for other tools' stores: vmerpo's attrs unchanged
            if not attrs[name]:
                del attrs[name]
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StoreSpec:
        if not isinstance(attrs, Mapping):
            raise StoreError(f"store attrs 'spec' must be a JSON object, got {type(attrs).__name__}")
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


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _spec_type_error(name: str, expected: str, value: Any) -> StoreError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return StoreError(f"spec field {name} must be {expected}, got {shown}")


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
            if spec.foreign:
                raise StoreError("spec keys/absent describe another tool's store; a vmerpo store has every array")
            if zarr_format not in (2, 3):
                raise StoreError(f"zarr_format must be 2 or 3, got {zarr_format}")
            self.root = _open_group(self.path, "w", storage_options, zarr_format)
            self._acquire_lock()
            try:
                self._create(spec, zarr_format)
            except BaseException:
                self.close()  # a failed creation does not stay locked
                raise
        else:
            if not _is_url(self.path):  # symlinks and special files: refused before any read
                _scan_local(self.path)
            self.root = _open_group(self.path, "r+", storage_options)
            self._acquire_lock()
            try:
                if not written_by_vmerpo(self.root):
                    raise StoreError(f"{self.path} was not written by vmerpo (its attrs have no format "
                                     f"{FORMAT_NAME!r}): vmerpo reads such stores but appends only to its own; "
                                     "write new episodes to a new store")
                stored = _read_spec(self.root, self.path)
                if spec is not None:
                    diff = stored.compatibility_errors(spec)
                    if diff:
                        raise StoreError(f"{self.path} is incompatible with this writer: {diff[0]}")
                self._recover()
            except BaseException:
                self.close()  # a refused store does not stay locked
                raise
        try:
            self.spec = StoreSpec.from_attrs(self.root.attrs["spec"])
            self._load_handles()
        except KeyError as e:
            self.close()
            raise StoreError(f"{self.path}: no {e} in the store (not a vmerpo episode store?)") from None
        except BaseException:
            self.close()
            raise

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
        """Truncate whatever a killed writer left beyond the last committed episode.

        Damage is refused (StoreError) before anything is changed: a committed row is never
        dropped for a damaged commit entry (only a trailing 0, a commit cut short, is one)."""
        files = None if _is_url(self.path) else _scan_local(self.path)
        state = _commit_state(self.root, self.path, files)
        if state.leftover:
            _truncate_to_commit(state, files)
            dropped_rows = max((n for k, n in state.leftover.items() if k.startswith("data/")),
                               default=0)
            self.log(
                f"{self.path}: dropped an incomplete episode left by an interrupted writer "
                f"({dropped_rows} uncommitted rows); {state.n_episodes} committed episodes kept"
            )
        if files is not None:  # temp files of an interrupted atomic write
            for partial in files.partial:
                (Path(self.path) / partial).unlink(missing_ok=True)

    def _array_names(self, group: str) -> Iterable[str]:
        if group not in self.root:
            return []
        return [name for name, _ in self.root[group].arrays()]

    def _acquire_lock(self) -> None:
        if not _is_url(self.path):
            self._lock_fd = _lock_store(self.path)

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
        self.check_task(task_id)
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
        self.check_task(task_id)
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
        self.check_task(task_id)
        return EpisodeStream(self, task_id, provenance)

    def check_task(self, task_id: int) -> None:
        """Refuse a task id outside the store's task table (a store without a table takes any)."""
        known = self.spec.task_ids()
        if known and int(task_id) not in known:
            raise StoreError(f"task id {task_id} is not in the store's task table {known}; add it first "
                             "(EpisodeWriter.add_task; recorder_node adds its task_id itself)")

    def add_task(self, task_id: int, name: str | None = None, split: str = "train",
                 params: Mapping[str, Any] | None = None) -> bool:
        """Extend the store's task table with `task_id` (`split` train or test). Returns False
        when the table has it already with that split; a different split is refused."""
        if split not in ("train", "test"):
            raise StoreError(f"split {split!r}: choose train or test")
        if not _is_int(task_id) and not isinstance(task_id, np.integer):
            raise StoreError(f"task id {task_id!r}: must be an integer")
        for t in self.spec.tasks:
            if int(t["id"]) == int(task_id):
                if t.get("split") != split:
                    raise StoreError(f"task id {task_id} is in the store's task table with split "
                                     f"{t.get('split')!r}, not {split!r}")
                return False
        entry = {"id": int(task_id), "name": name or f"task {task_id}", "params": dict(params or {}), "split": split}
        spec = dataclasses.replace(self.spec, tasks=[*self.spec.tasks, entry])
        self.root.attrs.update({"spec": spec.to_attrs()})
        self.spec = spec
        return True

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


# -- untrusted stores: files, locks, bounded reads, the commit state ----------------------------
@dataclass
class _Files:
    """The regular files of a local store (keys relative to its root), grouped by array."""

    by_array: dict[str, set[str]]  # "data/image" -> {"data/image/0.0.0.0", ...}
    partial: list[str]  # temp files of interrupted atomic writes


def _scan_local(path: str | os.PathLike) -> _Files:
    """Walk a local store without following links. Refuses, with one line naming the path, a
    symbolic link (an append through a linked array directory would change another store)
    and anything that is not a regular file or directory (a FIFO blocks a read, a device
    reads without end), before anything in the store is opened. Costs one directory listing
    per directory (no stat per file)."""
    root = Path(path)
    by_array: dict[str, set[str]] = defaultdict(set)
    partial: list[str] = []
    if not root.is_dir():
        return _Files(dict(by_array), partial)
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(root / rel if rel else root))
        except OSError as e:
            raise StoreError(f"{path}: cannot list {rel or '.'} ({e.strerror or type(e).__name__})") from None
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_symlink():
                raise StoreError(f"{path}: {key} is a symbolic link; a store must hold its own files "
                                 "(refused before reading or writing through it)")
            if entry.is_dir(follow_symlinks=False):
                stack.append(key)
            elif entry.is_file(follow_symlinks=False):
                by_array["/".join(key.split("/")[:2])].add(key)
                if entry.name.endswith(".partial"):
                    partial.append(key)
            else:
                raise StoreError(f"{path}: {key} is {_file_kind(entry)}, not a regular file "
                                 "(refused before reading it)")
    return _Files(dict(by_array), partial)


def _file_kind(entry: os.DirEntry) -> str:
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "unreadable"
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def _lock_store(path: str, shared: bool = False) -> int | None:
    """The writer lock (flock on .vmerpo-writer.lock). shared=True (a dry run) only checks
    that no writer holds it, and creates nothing: returns None if there is no lock file."""
    lock_path = Path(path) / ".vmerpo-writer.lock"
    flags = (os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT) | os.O_NOFOLLOW
    try:
        fd = os.open(lock_path, flags, 0o644)
    except FileNotFoundError:
        if shared:
            return None
        raise
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{path} is being written by another process") from None
    return fd


def _unlock_store(fd: int | None) -> None:
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _first_line(e: BaseException, default: str) -> str:
    return str(e).splitlines()[0] if str(e) else default


def _members(root: Any, path: str, group: str) -> list[tuple[str, Any]]:
    """("group/name", array) of the arrays under data/ or meta/ ([] if the group is absent)."""
    try:
        if group not in root:
            return []
        return [(f"{group}/{n}", a) for n, a in root[group].arrays()]
    except Exception as e:  # garbled .zarray / zarr.json
        raise StoreError(f"{path}: cannot read the array metadata under {group}/ "
                         f"({type(e).__name__}: {_first_line(e, 'unreadable')})") from None


def _row_bytes(arr: Any) -> int:
    return math.prod(int(d) for d in arr.shape[1:]) * int(arr.dtype.itemsize)


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _read(arr: Any, path: str, name: str, sl: slice = slice(None)) -> np.ndarray:
    """arr[sl] (rows along axis 0). Refuses, before allocating, a read larger than this
    machine's memory (a declared length that is not backed by data); any zarr or codec error
    becomes one line naming the array."""
    rows = len(range(*sl.indices(int(arr.shape[0])))) if arr.ndim else 1
    nbytes = rows * _row_bytes(arr)
    if nbytes > _LARGE_READ_BYTES and nbytes > _memory_bytes():
        raise StoreError(f"{path}: reading {rows} rows of {name} needs {nbytes / 2**30:.1f} GiB, more "
                         f"than this machine's {_memory_bytes() / 2**30:.1f} GiB of memory")
    try:
        return np.asarray(arr[sl])
    except StoreError:
        raise
    except Exception as e:  # decompression errors, truncated/missing chunks, MemoryError
        raise StoreError(f"{path}: cannot read {name} ({type(e).__name__}: "
                         f"{_first_line(e, 'damaged chunk')})") from None


def _check_array_metadata(path: str, name: str, arr: Any) -> None:
    """What an array's metadata declares, checked before any chunk is listed or read."""
    if arr.ndim < 1:
        raise StoreError(f"{path}: {name} is a 0-d array; every array under data/ and meta/ has "
                         "one row per frame or entry per episode")
    chunk_bytes = math.prod(int(c) for c in arr.chunks) * int(arr.dtype.itemsize)
    if chunk_bytes > MAX_CHUNK_BYTES:
        raise StoreError(f"{path}: {name} declares chunks {tuple(arr.chunks)} of {chunk_bytes} bytes, "
                         f"above the {MAX_CHUNK_BYTES} a reader decodes at once; the metadata is damaged")


def _is_fill(arr: Any, value: int) -> bool:
    fill = getattr(arr.metadata, "fill_value", None)
    try:
        return value == 0 or (fill is not None and value == int(fill))
    except (TypeError, ValueError):
        return value == 0


def _read_committed_ends(arr: Any, path: str) -> tuple[np.ndarray, bool]:
    """The committed prefix of meta/episode_ends, and whether one half-written commit entry
    follows it. Read window by window and stopped at the first entry that does not increase,
    so a huge declared length costs nothing. A writer killed inside the append of the commit
    entry leaves exactly one trailing fill value (0): that, and only that, is a commit cut
    short. Any other non-increasing entry is damage: refused, never taken for a half-written
    commit (the next writer would drop a committed episode's rows)."""
    name = "meta/episode_ends"
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise StoreError(f"{path}: {name} has shape {tuple(arr.shape)} and dtype {arr.dtype}; "
                         "expected one integer end index per episode")
    n = int(arr.shape[0])
    parts: list[np.ndarray] = []
    prev, valid, stop_value = 0, 0, 0
    for start in range(0, n, _ENDS_WINDOW):
        w = _read(arr, path, name, slice(start, min(n, start + _ENDS_WINDOW))).astype(np.int64)
        before = np.concatenate([np.array([prev], np.int64), w[:-1]])
        bad = np.flatnonzero(w <= before)
        if bad.size:
            i = int(bad[0])
            parts.append(w[:i])
            valid += i
            prev = int(w[i - 1]) if i else prev
            stop_value = int(w[i])
            break
        parts.append(w)
        valid += len(w)
        prev = int(w[-1])
    ends = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    rest = n - valid
    if rest > 1:
        raise StoreError(f"{path}: {name} is not strictly increasing at episode {valid} ({rest} entries "
                         "from there on); the store is damaged")
    if rest == 1 and not _is_fill(arr, stop_value):
        raise StoreError(f"{path}: {name}[{valid}] is {stop_value}, not above the previous end {prev}: a "
                         "damaged commit entry (only a trailing 0, a commit cut short, is dropped); the "
                         "store is damaged")
    return ends, rest == 1


@dataclass
class CommitState:
    """What a store has committed, and what an interrupted writer left beyond it."""

    episode_ends: np.ndarray  # the committed entries of meta/episode_ends
    half_commit: bool  # meta/episode_ends ends in one 0 entry: a commit cut short
    leftover: dict[str, int]  # "data/x" or "meta/y" -> rows or entries past the commit
    arrays: dict[str, Any] = field(repr=False)  # "data/x" / "meta/y" -> zarr array

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def leftover_rows(self) -> int:
        return max((n for k, n in self.leftover.items() if k.startswith("data/")), default=0)


def _present_keys(arr: Any, files: _Files | None) -> set[str]:
    """Store keys under an array: from the scan of a local store, else one listing."""
    prefix = _key_prefix(arr)
    if files is not None:
        return files.by_array.get(prefix.rstrip("/"), set())
    from zarr.core.sync import sync

    sp = arr.store_path

    async def keys() -> set[str]:
        return {k async for k in sp.store.list_prefix(prefix)}

    return sync(keys())


def _key_prefix(arr: Any) -> str:
    p = arr.store_path.path
    return f"{p}/" if p else ""


def _first_missing_chunk(arr: Any, rows: int, present: set[str]) -> tuple[tuple[int, ...], slice] | None:
    """(grid coordinates, row range) of the first stored object (chunk, or shard) covering rows
    [0, rows) that the store lacks. Stops at the first gap, so it visits at most one more
    coordinate than there are files: a declared length is never enumerated."""
    step = (arr.shards or arr.chunks)[0]
    grid = [-(-rows // step)] + [-(-int(s) // int(c)) for s, c in
                                 zip(arr.shape[1:], (arr.shards or arr.chunks)[1:], strict=True)]
    prefix = _key_prefix(arr)
    for coords in _iter_grid(grid):
        if prefix + arr.metadata.encode_chunk_key(coords) not in present:
            return coords, slice(coords[0] * step, (coords[0] + 1) * step)
    return None


def _iter_grid(grid: list[int]) -> Iterator[tuple[int, ...]]:
    """Grid coordinates in C order, lazily (itertools.product would first materialise every
    axis: a declared length of 1e12 rows is 2.4e8 chunk indices)."""
    if any(g <= 0 for g in grid):
        return
    coords = [0] * len(grid)
    while True:
        yield tuple(coords)
        axis = len(grid) - 1
        while axis >= 0:
            coords[axis] += 1
            if coords[axis] < grid[axis]:
                break
            coords[axis] = 0
            axis -= 1
        if axis < 0:
            return


def _chunk_row_index(arr: Any, rel: str) -> int | None:
    """The grid coordinate along axis 0 of a chunk key relative to its array, or None if
    `rel` is not one of the array's chunk keys (metadata, temp files)."""
    md = arr.metadata
    if md.zarr_format == 2:
        parts = rel.split(md.dimension_separator or ".")
    else:
        enc = md.chunk_key_encoding
        parts = rel.split(enc.separator)
        if enc.name == "default":
            if parts[0] != "c":
                return None
            parts = parts[1:]
    if len(parts) != arr.ndim or not all(p.isdigit() for p in parts):
        return None
    coords = tuple(int(p) for p in parts)
    return coords[0] if md.encode_chunk_key(coords) == rel else None


def _commit_state(root: Any, path: str, files: _Files | None) -> CommitState:
    """Validate what the arrays declare against the commit, in time and memory bounded by the
    files present (never by a declared length), and find the rows and entries past the commit.

    Refused (StoreError naming the array): a damaged meta/episode_ends, an array shorter than
    the commit, an array declaring more than MAX_LEFTOVER_ROWS past it, oversized chunks, and
    (stores that write every chunk) a missing chunk of committed rows."""
    arrays = dict(_members(root, path, "data") + _members(root, path, "meta"))
    if "meta/episode_ends" not in arrays:
        raise StoreError(f"{path}: missing array meta/episode_ends")
    for name, arr in arrays.items():
        _check_array_metadata(path, name, arr)
    complete = bool(root.attrs.get(COMPLETE_CHUNKS_ATTR, False))

    def check_chunks(name: str, arr: Any, rows: int) -> None:
        if not complete or rows <= 0:
            return
        missing = _first_missing_chunk(arr, rows, _present_keys(arr, files))
        if missing:
            coords, region = missing
            raise StoreError(f"{path}: {name} lacks chunk {'.'.join(map(str, coords))} (rows "
                             f"{region.start}-{min(region.stop, rows) - 1}); the store is damaged or "
                             "incompletely copied")

    ends_arr = arrays["meta/episode_ends"]
    data_rows = [int(a.shape[0]) for k, a in arrays.items() if k.startswith("data/")]
    if data_rows and int(ends_arr.shape[0]) > min(data_rows) + 1:  # an episode has >= 1 row
        raise StoreError(f"{path}: meta/episode_ends declares {int(ends_arr.shape[0])} entries but a data "
                         f"array has only {min(data_rows)} rows (every episode has one at least, plus "
                         "one commit entry cut short): the array's metadata is damaged")
    # the last entry may be a commit cut short, whose chunk need not exist
    check_chunks("meta/episode_ends", ends_arr, int(ends_arr.shape[0]) - 1)
    ends, half = _read_committed_ends(ends_arr, path)
    n_eps = len(ends)
    n_frames = int(ends[-1]) if n_eps else 0
    leftover: dict[str, int] = {}
    for name, arr in arrays.items():
        data = name.startswith("data/")
        n, committed = int(arr.shape[0]), (n_frames if data else n_eps)
        if n < committed:
            if data:
                ep = int(np.searchsorted(ends, n, side="right"))
                raise StoreError(f"{path}: {name} has {n} rows but meta/episode_ends commits {n_frames} "
                                 f"(episode {ep} is cut short)")
            raise StoreError(f"{path}: {name} has {n} entries for {n_eps} episodes")
        if n - committed > MAX_LEFTOVER_ROWS:
            what = "rows" if data else "entries"
            raise StoreError(f"{path}: {name} declares {n} {what} but meta/episode_ends commits "
                             f"{committed}; an interrupted writer leaves at most {MAX_LEFTOVER_ROWS} "
                             f"uncommitted {what}: the array's metadata is damaged")
        if name != "meta/episode_ends":
            check_chunks(name, arr, committed)
        if n > committed:
            leftover[name] = n - committed
    return CommitState(ends, half, dict(sorted(leftover.items())), arrays)


def _truncate(arr: Any, rows: int, present: set[str]) -> None:
    """Shrink an array to `rows` along axis 0 as zarr does (the stored objects wholly past the
    new end first, then the metadata), deleting the files that exist rather than every chunk
    of the declared shape (zarr's resize builds the set of all old chunk coordinates)."""
    from zarr.core.sync import sync

    step = (arr.shards or arr.chunks)[0]
    first_gone = -(-rows // step)
    prefix = _key_prefix(arr)
    for key in sorted(present):
        index = _chunk_row_index(arr, key[len(prefix):]) if key.startswith(prefix) else None
        if index is not None and index >= first_gone:
            sync(arr.store_path.store.delete(key))
    if int(arr.shape[0]) != rows:
        sync(arr.async_array.resize((rows, *arr.shape[1:]), delete_outside_chunks=False))


def _truncate_to_commit(state: CommitState, files: _Files | None) -> None:
    """Drop the rows and entries past the commit, in the reverse of the writer's order: the
    half-written commit entry, then the per-episode meta, then the data rows. Every state in
    between is one a killed writer could leave (committed rows and entries are never touched),
    so a kill here loses nothing and a rerun finishes the job."""
    meta = sorted(k for k in state.leftover if k.startswith("meta/") and k != "meta/episode_ends")
    data = sorted(k for k in state.leftover if k.startswith("data/"))
    order = (["meta/episode_ends"] if "meta/episode_ends" in state.leftover else []) + meta + data
    for name in order:
        arr = state.arrays[name]
        keep = state.n_frames if name.startswith("data/") else state.n_episodes
        _truncate(arr, keep, _present_keys(arr, files))


def repair_store(path: str | os.PathLike, dry_run: bool = False,
                 storage_options: dict | None = None) -> dict[str, Any]:
    """`vmerpo repair`: remove what an interrupted writer left past the last commit, so that
    every zarr-2 reader (diffusion_policy's ReplayBuffer reads data/* whole and requires each
    array's length to equal meta/episode_ends[-1]) sees exactly the committed episodes.

    Takes the writer lock (local stores), so it never races a writer; a dry run only checks that
    no writer holds it and changes nothing. Damage is refused as `EpisodeStore.open` refuses it,
    before anything is changed. Safe to kill at any moment: rerun to finish."""
    path = str(path)
    local = not _is_url(path)
    if not _exists(path, storage_options):
        raise FileNotFoundError(f"{path}: no such episode store")
    files = _scan_local(path) if local else None
    try:
        root = _open_group(path, "r" if dry_run else "r+", storage_options)
    except Exception as e:  # zarr raises several types for a non-store path
        raise StoreError(f"{path}: not a zarr group ({type(e).__name__}: {_first_line(e, 'unreadable')})") from None
    fd = _lock_store(path, shared=dry_run) if local else None
    try:
        if local and not dry_run:
            files = _scan_local(path)  # as the previous holder of the lock left it
        state = _commit_state(root, path, files)
        partial = list(files.partial) if files is not None else []
        if not dry_run:
            _truncate_to_commit(state, files)
            for p in partial:
                (Path(path) / p).unlink(missing_ok=True)
    finally:
        _unlock_store(fd)
    return {
        "path": path,
        "dry_run": dry_run,
        "episodes": state.n_episodes,
        "frames": state.n_frames,
        "leftover": dict(state.leftover),
        "leftover_rows": state.leftover_rows,
        "half_commit": state.half_commit,
        "partial_files": len(partial),
        "changed": bool(state.leftover or partial) and not dry_run,
    }


def _exists(path: str, storage_options: dict | None = None) -> bool:
    if not _is_url(path):
        p = Path(path)
        return p.exists() and any(p.iterdir()) if p.is_dir() else p.exists()
    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs.exists(root)


# `--spec FILE` of the verbs: the spec of a store that carries none (written by another tool),
# by resolved path; consulted by EpisodeStore.open only where the store's attrs have no spec.
_SPEC_FILES: dict[str, StoreSpec] = {}


def use_spec(spec: StoreSpec | None, path: str | os.PathLike | None = None) -> None:
    """Describe the store at `path` (every store, if None) with `spec` wherever it is opened in
    this process while its attrs hold no spec (`vmerpo <verb> --spec FILE`); None forgets it."""
    if spec is None:
        _SPEC_FILES.pop(_spec_key(path), None)
    else:
        _SPEC_FILES[_spec_key(path)] = spec


def spec_file_for(path: str | os.PathLike) -> StoreSpec | None:
    return _SPEC_FILES.get(_spec_key(path), _SPEC_FILES.get("*"))


def _spec_key(path: str | os.PathLike | None) -> str:
    if path is None:
        return "*"
    return str(path) if _is_url(path) else os.path.realpath(path)


def written_by_vmerpo(root: Any) -> bool:
    return root.attrs.get("format") == FORMAT_NAME


def _read_spec(root, path: str) -> StoreSpec:
    attrs = dict(root.attrs)
    if "spec" in attrs:
        try:
            return StoreSpec.from_attrs(attrs["spec"])
        except StoreError as e:  # which store's spec is wrong
            raise StoreError(f"{path}: {e}") from None
    if not written_by_vmerpo(root):
        override = spec_file_for(path)
        if override is not None:
            return override
        raise StoreError(f"{path}: a zarr store with no vmerpo spec (written by another tool?): "
                         f"`vmerpo inspect {path}` shows what it holds, `vmerpo spec {path} --control-hz HZ` "
                         "describes it (or pass --spec FILE)")
    raise StoreError(f"{path}: group attrs have no 'spec' (damaged: a vmerpo store always has one)")


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
        # symlinks and special files (FIFO, devices): refused before anything is read
        files = None if _is_url(path) else _scan_local(path)
        try:
            root = _open_group(path, "r", storage_options)
        except Exception as e:  # zarr raises several types for a non-store path
            raise StoreError(f"{path}: not a zarr group ({type(e).__name__}: {e})") from None
        if spec is None:
            spec = _read_spec(root, path)
        store = cls(root, path, spec, load, cache_mb)
        store._validate_layout(files)
        # committed rows only: rows past the commit are never read
        raw_bytes = sum(store.n_frames * _row_bytes(a) for a in store._arrays.values())
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

    def _validate_layout(self, files: _Files | None = None) -> None:
        spec = self.spec
        self.foreign = not written_by_vmerpo(self.root)
        if spec.foreign and not self.foreign:
            raise StoreError(f"{self.path}: a vmerpo store whose spec maps keys or lists absent arrays "
                             "(keys/absent describe other tools' stores only)")
        # every array the store lacks, named at once
        names = {k: spec.array_name(k) for k in MAPPABLE_KEYS}
        missing = [names[k] for k in MAPPABLE_KEYS if k not in spec.absent and not self._has(names[k])]
        missing += [f"meta/{k}" for k in ("episode_ends",) if not self._has(f"meta/{k}")]
        if missing:
            hint = "" if not self.foreign else (
                f" (map other names with `vmerpo spec {self.path} --key image=NAME`, or mark "
                f"{'/'.join(OPTIONAL_KEYS)} absent; `vmerpo inspect` lists its arrays)")
            raise StoreError(f"{self.path}: missing array{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)}{hint}")
        # lengths, chunks and the commit; rows past the last commit are an interrupted episode:
        # ignored by readers (reported by `vmerpo inspect`, removed by `vmerpo repair`)
        self.commit = _commit_state(self.root, self.path, files)
        self.episode_ends = self.commit.episode_ends
        self._names = {k: v for k, v in names.items() if v in self.commit.arrays}
        ours = {v: k for k, v in self._names.items() if k in DATA_KEYS}
        for full, arr in self.commit.arrays.items():
            if not full.startswith("data/"):
                continue
            name = ours.get(full, full[len("data/"):])
            if full not in ours and name in DATA_KEYS:
                continue  # another tool's array named like one of ours that the spec maps elsewhere
            self._names.setdefault(name, full)
            self._arrays[name] = arr
            self._check_dtype(name, full, arr)
            expected = self.spec.trailing_shape(name)
            if name in DATA_KEYS and tuple(arr.shape[1:]) != expected:
                raise StoreError(f"{self.path}: {full} has rows of shape {tuple(arr.shape[1:])}, "
                                 f"the store attrs say {expected}")

    def _check_dtype(self, name: str, full: str, arr: Any) -> None:
        if name not in _DTYPES or arr.dtype == _DTYPES[name]:
            return
        # another tool's numbers are read as ours (float64 state, int terminal, ...); images are
        # RGB uint8 in every store
        kinds = {"state": "fiu", "action": "fiu", "reward": "fiu", "timestamp": "fiu", "terminal": "biu"}
        if self.foreign and arr.dtype.kind in kinds.get(name, ""):
            return
        raise StoreError(f"{self.path}: {full} has dtype {arr.dtype}, expected {np.dtype(_DTYPES[name])}")

    @property
    def leftover(self) -> dict[str, int]:
        """Rows (data/) and entries (meta/) past the last commit, per array: what a killed
        writer left. vmerpo ignores them; other zarr readers may not (`vmerpo repair`)."""
        return dict(self.commit.leftover)

    def _read_array(self, name: str, sl: slice = slice(None)) -> np.ndarray:
        try:
            arr = self.root[name]
        except Exception as e:
            raise StoreError(f"{self.path}: cannot read {name} ({type(e).__name__}: "
                             f"{_first_line(e, 'unreadable')})") from None
        return _read(arr, self.path, name, sl)

    def _read_full(self, key: str) -> np.ndarray:
        return self._read_array(self._names[key], slice(0, self.n_frames))

    def _load_lowdim(self) -> None:
        for key, arr in self._arrays.items():
            if arr.ndim <= 2:
                values = self._read_full(key)
                if key in _DTYPES and values.dtype != _DTYPES[key]:  # another tool's (checked kinds)
                    values = values.astype(_DTYPES[key])
                if values.dtype.kind == "f":
                    bad = ~np.isfinite(values)
                    if bad.any():
                        row = int(np.argwhere(bad)[0][0])
                        ep = int(np.searchsorted(self.episode_ends, row, side="right"))
                        raise StoreError(f"{self.path}: data/{key} has a non-finite value "
                                         f"(NaN/inf) at row {row}, episode {ep}")
                self._memory[key] = values
        E = self.n_episodes
        # what another tool's store lacks (spec.absent): no terminations, row times from the
        # rate, the table's one task, success unknown
        self.absent = [k for k in OPTIONAL_KEYS if k not in self._names]
        if "terminal" in self.absent:
            self._memory["terminal"] = np.zeros(self.n_frames, bool)
        if "timestamp" in self.absent:
            rows = np.arange(self.n_frames) - np.repeat(self.episode_starts, self.episode_lengths)
            self._memory["timestamp"] = rows / float(self.spec.control_hz)
        if "episode_task" in self.absent:
            self.episode_task = np.full(E, self.spec.task_ids()[0], np.int64)
        else:
            self.episode_task = self._read_episode_values("episode_task", "iu").astype(np.int64)
        if "episode_success" in self.absent:
            self.episode_success = np.zeros(E, bool)
        else:
            self.episode_success = self._read_episode_values("episode_success", "biuf").astype(bool)
        known = set(self.spec.task_ids())
        if known:
            unknown = sorted(set(self.episode_task.tolist()) - known)
            if unknown:
                raise StoreError(f"{self.path}: {self._names.get('episode_task', 'meta/episode_task')} has task id "
                                 f"{unknown[0]} that is not in the task table")

    def _read_episode_values(self, key: str, kinds: str) -> np.ndarray:
        """meta/episode_task or meta/episode_success (or another tool's array mapped to it):
        one value per episode, of a kind it can be read as (task ids: integers)."""
        name = self._names[key]
        values = self._read_array(name, slice(0, self.n_episodes))
        if values.ndim != 1 or values.dtype.kind not in kinds:
            raise StoreError(f"{self.path}: {name} has entries of shape {tuple(values.shape[1:])} and dtype "
                             f"{values.dtype}; {key} needs one {'integer' if kinds == 'iu' else 'value'} per episode")
        return values

    def verify(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Decompress every chunk of every array (images too); raises StoreError on damage."""
        for key, arr in self._arrays.items():
            if key in self._memory:
                continue
            chunk_bytes = max(1, math.prod(int(c) for c in arr.chunks) * arr.dtype.itemsize)
            step = arr.chunks[0] * max(1, min(16, (64 << 20) // chunk_bytes))
            for start in range(0, self.n_frames, step):
                self._read_array(self._names[key], slice(start, min(start + step, self.n_frames)))
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
        return list(self._arrays) + [k for k in ("terminal", "timestamp") if k in self.absent]

    def array_shape(self, key: str) -> tuple[int, ...]:
        if key not in self._arrays:
            return tuple(self._memory[key].shape)
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
                    self._names[key], slice(c * cs, min((c + 1) * cs, self.n_frames))),
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
        mapped = set(self._names.values())
        return sorted(
            n[len("episode_"):] for n, _ in self.root["meta"].arrays()
            if n.startswith("episode_") and n not in META_KEYS and f"meta/{n}" not in mapped
        )

    def episode_returns(self) -> np.ndarray:
        rewards = self._memory["reward"]
        return np.add.reduceat(rewards, self.episode_starts) if self.n_episodes else np.zeros(0)

    @property
    def zarr_format(self) -> int:
        return int(self.root.metadata.zarr_format)
