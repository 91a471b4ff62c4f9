"""Untrusted stores: declared lengths, damaged commit entries, symlinks and special
files, spec types, bounded reads, and `vmerpo repair` of what a killed writer left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import learning.store as store_mod
from learning.store import (
    MAX_LEFTOVER_ROWS,
    EpisodeStore,
    EpisodeWriter,
    StoreError,
    StoreSpec,
    repair_store,
)
from tests.learning.storeutil import check_episode, episode, make_store, spec
from vmerpo.benchmarks.faults import replay_buffer_episode, replay_buffer_read
from vmerpo.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOCK = ".vmerpo-writer.lock"


def _snapshot(path: Path) -> dict[str, bytes]:
    """Every file of a store (the lock file aside), to prove that nothing changed."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != LOCK}


def _metadata_file(path: Path, name: str) -> Path:
    return path / name / (".zarray" if (path / name / ".zarray").exists() else "zarr.json")


def _declare_rows(path: Path, name: str, rows: int) -> None:
    """Edit an array's metadata to declare `rows` along axis 0, writing no chunk."""
    f = _metadata_file(path, name)
    meta = json.loads(f.read_text())
    meta["shape"][0] = rows
    f.write_text(json.dumps(meta))


def _refused(fn, match: str) -> str:
    with pytest.raises(StoreError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def _add_leftovers(path: Path, k: int = 7, half_commit: bool = True) -> int:
    """What a writer killed inside its commit leaves: the episode's data rows, its per-episode
    meta entries, a new provenance array, and (half_commit) a commit entry resized but never
    written (the fill value 0). Returns the leftover rows."""
    root: Any = zarr.open_group(str(path), mode="r+")
    write_all = {"write_empty_chunks": True}
    ep = episode(k)
    for key, value in ep.items():
        root[f"data/{key}"].with_config(write_all).append(value)
    root["meta/episode_task"].with_config(write_all).append(np.array([1], np.int32))
    root["meta/episode_success"].with_config(write_all).append(np.array([True]))
    if half_commit:
        ends = root["meta/episode_ends"]
        ends.resize((ends.shape[0] + 1,))
    return len(ep["image"])


# -- declared lengths ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("name", ["data/image", "data/reward", "meta/episode_task", "meta/episode_ends"])
def test_a_declared_length_of_1e12_rows_is_refused_in_under_a_second(tmp_path, fmt, name):
    path = make_store(tmp_path / "s.zarr", n=3, zarr_format=fmt)
    _declare_rows(path, name, 10**12)
    before = _snapshot(path)
    for what in (lambda: EpisodeStore.open(path, load="lazy"),
                 lambda: EpisodeWriter(path, mode="a", log=lambda m: None),
                 lambda: repair_store(path),
                 lambda: repair_store(path, dry_run=True)):
        t0 = time.perf_counter()
        msg = _refused(what, name)
        assert time.perf_counter() - t0 < 1.0, msg
        assert "1000000000000" in msg
    assert _snapshot(path) == before  # refused before anything was changed


def test_rows_declared_past_the_commit_within_the_bound_are_leftovers(tmp_path):
    """A writer killed after resizing and before writing any chunk: rows declared, no chunks.
    Readers ignore them, inspect reports them, the next writer drops them."""
    path = make_store(tmp_path / "s.zarr", n=3)
    n_frames = EpisodeStore.open(path).n_frames
    _declare_rows(path, "data/image", n_frames + 5000)
    store = EpisodeStore.open(path, load="lazy")
    assert store.n_episodes == 3 and store.leftover == {"data/image": 5000}
    for k in range(3):
        check_episode(store.episode(k), k)
    _declare_rows(path, "data/image", n_frames + MAX_LEFTOVER_ROWS + 1)
    _refused(lambda: EpisodeStore.open(path), "data/image declares")
    _declare_rows(path, "data/image", n_frames + 5000)
    with EpisodeWriter(path, mode="a", log=lambda m: None) as w:
        w.add_episode(episode(3), task_id=0, success=True)
    store = EpisodeStore.open(path)
    assert store.leftover == {}
    for k in range(4):
        check_episode(store.episode(k), k)


def test_committed_rows_beyond_the_machine_memory_are_refused_before_allocating(tmp_path):
    """A store without the complete-chunks attr (another tool's) reads absent chunks as fill
    values: a committed length of 1e12 rows would be a multi-terabyte read. Refused, in one
    line naming the array, before any allocation."""
    path = tmp_path / "foreign.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    n = 10**12
    for key, value in episode(0).items():
        root.create_array(f"data/{key}", shape=(n, *value.shape[1:]), dtype=value.dtype,
                          chunks=(4096 if value.ndim < 3 else 85, *value.shape[1:]))
    root.create_array("meta/episode_ends", data=np.array([n], np.int64))
    root.create_array("meta/episode_task", data=np.array([0], np.int32))
    root.create_array("meta/episode_success", data=np.array([True]))
    t0 = time.perf_counter()
    msg = _refused(lambda: EpisodeStore.open(path, spec=spec(), load="lazy"), r"reading \d+ rows of data/")
    assert time.perf_counter() - t0 < 1.0, msg


def test_oversized_chunks_and_zero_d_arrays_are_refused(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=2)
    f = _metadata_file(path, "data/state")
    meta = json.loads(f.read_text())
    meta["chunks"][0] = 2**40
    f.write_text(json.dumps(meta))
    _refused(lambda: EpisodeStore.open(path), "data/state declares chunks")
    meta["chunks"][0] = 4096
    meta["shape"], meta["chunks"] = [], []
    f.write_text(json.dumps(meta))
    _refused(lambda: EpisodeStore.open(path), "data/state is a 0-d array")


# -- the commit entry -------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["smaller", "equal", "negative", "beyond_data"])
def test_a_damaged_last_episode_end_is_refused_and_no_committed_row_changes(tmp_path, value):
    """Only a trailing 0 is a commit cut short; any other damage to the last entry is refused
    by readers, writers and repair alike, and the store is left as it was."""
    path = make_store(tmp_path / "s.zarr", n=3)
    ends = zarr.open_group(str(path), mode="r+")["meta/episode_ends"]
    e = ends[:].tolist()
    ends[2] = {"smaller": e[1] - 3, "equal": e[1], "negative": -1, "beyond_data": 10**9}[value]
    before = _snapshot(path)
    match = r"data/\w+ has \d+ rows but meta/episode_ends commits" if value == "beyond_data" \
        else r"meta/episode_ends\[2\] is .* damaged commit entry"
    _refused(lambda: EpisodeStore.open(path), match)
    _refused(lambda: EpisodeWriter(path, mode="a", log=lambda m: None), match)
    _refused(lambda: repair_store(path), match)
    assert _snapshot(path) == before
    ends[2] = e[2]  # undo the damage: the three episodes are intact
    store = EpisodeStore.open(path)
    for k in range(3):
        check_episode(store.episode(k), k)
    with EpisodeWriter(path, mode="a") as w:  # and the lock was released by the refusals
        assert w.n_episodes == 3


def test_a_zero_tail_entry_is_a_commit_cut_short(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=3)
    _add_leftovers(path, half_commit=True)
    store = EpisodeStore.open(path)
    assert store.n_episodes == 3 and store.commit.half_commit
    assert store.leftover["meta/episode_ends"] == 1
    with EpisodeWriter(path, mode="a", log=lambda m: None) as w:
        w.add_episode(episode(3), task_id=0, success=True)
    store = EpisodeStore.open(path)
    assert store.n_episodes == 4 and store.leftover == {}
    for k in range(4):
        check_episode(store.episode(k), k)


def test_two_non_increasing_tail_entries_are_refused(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=3)
    ends = zarr.open_group(str(path), mode="r+")["meta/episode_ends"]
    ends.resize((5,))
    _refused(lambda: EpisodeStore.open(path), "not strictly increasing at episode 3")
    _refused(lambda: EpisodeWriter(path, mode="a"), "not strictly increasing at episode 3")


# -- symlinks and special files ---------------------------------------------------------------
@pytest.mark.parametrize("what", ["array_dir", "chunk", "attrs", "lock"])
def test_a_symlink_inside_a_store_is_refused_and_its_target_untouched(tmp_path, what):
    victim = make_store(tmp_path / "victim.zarr", n=5)
    path = make_store(tmp_path / "s.zarr", n=2)
    _add_leftovers(path)  # an append would truncate these rows: through the link, the victim's
    link, target = {
        "array_dir": ("data/image", victim / "data/image"),
        "chunk": ("data/action/0.0", victim / "data/action/0.0"),
        "attrs": (".zattrs", victim / ".zattrs"),
        "lock": (LOCK, tmp_path / "elsewhere.lock"),  # must not be created through the link
    }[what]
    victim_before = _snapshot(victim)
    p = path / link
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
    p.symlink_to(target)
    match = f"{link} is a symbolic link"
    _refused(lambda: EpisodeStore.open(path), match)
    _refused(lambda: EpisodeWriter(path, spec(), mode="a", log=lambda m: None), match)
    _refused(lambda: repair_store(path), match)
    _refused(lambda: repair_store(path, dry_run=True), match)
    assert _snapshot(victim) == victim_before
    assert not (tmp_path / "elsewhere.lock").exists()
    store = EpisodeStore.open(victim)
    for k in range(5):
        check_episode(store.episode(k), k)


def _special_file(p: Path, kind: str) -> None:
    p.unlink()
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    elif kind == "dev_zero":  # a character device in place of a chunk (needs root)
        os.mknod(p, 0o644 | stat.S_IFCHR, os.makedev(1, 5))


_OPEN_ALL = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from learning.store import EpisodeStore, EpisodeWriter, StoreError, repair_store
    for fn in (lambda: EpisodeStore.open({path!r}), lambda: EpisodeWriter({path!r}, mode="a"),
               lambda: repair_store({path!r})):
        try:
            fn()
            print("ACCEPTED")
        except StoreError as e:
            print("refused:", e)
""")


@pytest.mark.parametrize("kind", ["fifo", "socket", "dev_zero"])
@pytest.mark.parametrize("where", ["data/image/0.0.0.0", "meta/episode_ends/0", "data/state/.zarray"])
def test_a_special_file_in_a_store_is_refused_without_hanging(tmp_path, kind, where):
    if kind == "dev_zero" and os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    path = make_store(tmp_path / "s.zarr", n=2)
    _special_file(path / where, kind)
    script = tmp_path / "open.py"
    script.write_text(_OPEN_ALL.format(root=str(ROOT), path=str(path)))
    # in a subprocess: a FIFO opened for reading would block this test forever
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 3, proc.stdout + proc.stderr
    for line in lines:
        assert line.startswith("refused: ") and f"{where} is a" in line and "not a regular file" in line, line
    if kind != "fifo":
        return
    cli = subprocess.run([sys.executable, "-m", "vmerpo", "inspect", str(path)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert where in cli.stderr


# -- spec types ---------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("image_size", "64"),
    ("image_size", 64.5),
    ("image_size", True),
    ("control_hz", "10"),
    ("control_hz", None),
    ("action_low", "abc"),
    ("action_low", [-1.0, "x", 0.0]),
    ("action_high", [1.0, 1.0, None]),
    ("state_names", ["q0", 3]),
    ("state_names", "q0q1"),
    ("action_names", {"dx": 0}),
    ("robot", 5),
    ("action_type", ["ee_delta"]),
    ("gripper_channel", 7),
    ("gripper_channel", "2"),
    ("hold_action", [0.0, "0", 0.0]),
    ("camera", []),
    ("reward_source", "simulator"),
    ("tasks", {"id": 0}),
    ("tasks", [{"id": "0", "name": "t", "split": "train"}]),
    ("tasks", [{"name": "no id"}]),
    ("tasks", [{"id": 0, "name": 3}]),
])
def test_a_spec_with_a_wrong_type_is_refused_in_one_line_naming_the_field(tmp_path, field, value):
    path = make_store(tmp_path / "s.zarr", n=1)
    attrs_file = path / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    attrs["spec"][field] = value
    attrs_file.write_text(json.dumps(attrs))
    _refused(lambda: StoreSpec.from_attrs(attrs["spec"]), f"spec field {field}")
    _refused(lambda: EpisodeStore.open(path), f"spec field {field}")
    _refused(lambda: EpisodeWriter(path, mode="a"), f"spec field {field}")


def test_spec_attrs_that_are_not_an_object_are_refused(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=1)
    attrs_file = path / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    attrs["spec"] = ["not", "an", "object"]
    attrs_file.write_text(json.dumps(attrs))
    _refused(lambda: EpisodeStore.open(path), "'spec' must be a JSON object")


def test_numpy_numbers_are_valid_spec_values():
    """Importers compute limits and rates with numpy: those stay accepted."""
    s = StoreSpec(robot="r", control_hz=np.float64(30.02), image_size=np.int64(64),
                  state_names=["a"], action_names=["x", "y"],
                  action_low=[np.float32(-1), -1.0], action_high=list(np.array([1.0, 2.0])),
                  gripper_channel=np.int64(1), hold_action=[0.0, 0.0],
                  tasks=[{"id": np.int64(0), "name": "t", "split": "train"}])
    assert s.image_size == 64


# -- repair ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [2, 3])
def test_repair_leaves_exactly_the_committed_episodes(tmp_path, fmt):
    path = make_store(tmp_path / "s.zarr", n=4, zarr_format=fmt)
    rows = _add_leftovers(path)
    (path / "data" / "image" / "0.0.0.0.1234abcd.partial").write_bytes(b"temp")
    if fmt == 2:  # the reason for repair: diffusion_policy's reader refuses the leftover rows
        with pytest.raises(AssertionError, match="ReplayBuffer"):
            replay_buffer_read(path)
    before = _snapshot(path)
    dry = repair_store(path, dry_run=True)
    assert _snapshot(path) == before  # a dry run changes nothing
    assert dry["leftover"] == {**{f"data/{k}": rows for k in episode(0)}, "meta/episode_task": 1,
                               "meta/episode_success": 1, "meta/episode_ends": 1}
    assert dry["half_commit"] and dry["partial_files"] == 1 and not dry["changed"]
    done = repair_store(path)
    assert done["changed"] and done["leftover"] == dry["leftover"] and done["episodes"] == 4
    assert not list(path.rglob("*.partial"))
    store = EpisodeStore.open(path)
    assert store.n_episodes == 4 and store.leftover == {}
    root = replay_buffer_read(path)
    assert len(root["meta"]["episode_ends"]) == 4
    for k in range(4):
        check_episode(replay_buffer_episode(root, k), k)
    assert all(len(v) == 4 for v in root["meta"].values())
    again = repair_store(path)
    assert not again["changed"] and again["leftover"] == {}


@pytest.mark.parametrize("stop_after", [0, 1, 3, 6])
def test_repair_interrupted_at_any_step_loses_nothing_and_a_rerun_finishes(tmp_path, monkeypatch, stop_after):
    path = make_store(tmp_path / "s.zarr", n=3)
    _add_leftovers(path)
    real = store_mod._truncate
    calls = []

    def dying_truncate(arr, rows, present):
        if len(calls) == stop_after:
            # a kill between deleting an array's chunks and shrinking its metadata
            prefix = store_mod._key_prefix(arr)
            step = arr.chunks[0]
            for key in present:
                i = store_mod._chunk_row_index(arr, key[len(prefix):])
                if i is not None and i * step >= rows:
                    (path / key).unlink()
            raise KeyboardInterrupt
        calls.append(arr)
        real(arr, rows, present)

    monkeypatch.setattr(store_mod, "_truncate", dying_truncate)
    with pytest.raises(KeyboardInterrupt):
        repair_store(path)
    monkeypatch.setattr(store_mod, "_truncate", real)
    store = EpisodeStore.open(path)  # every intermediate state opens, with the same episodes
    assert store.n_episodes == 3
    for k in range(3):
        check_episode(store.episode(k), k)
    repair_store(path)
    assert EpisodeStore.open(path).leftover == {}
    root = replay_buffer_read(path)
    for k in range(3):
        check_episode(replay_buffer_episode(root, k), k)


def test_repair_takes_the_writer_lock(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=2)
    _add_leftovers(path, half_commit=False)
    with EpisodeWriter(path, mode="a", log=lambda m: None):  # (drops the leftovers itself)
        before = _snapshot(path)
        _refused(lambda: repair_store(path), "being written by another process")
        _refused(lambda: repair_store(path, dry_run=True), "being written by another process")
        assert _snapshot(path) == before


WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from learning.store import EpisodeWriter
    from tests.learning.storeutil import episode
    with EpisodeWriter({path!r}, mode="a", log=lambda m: None) as w:
        k = w.n_episodes
        while True:
            ep = episode(k, 200, 64)
            s = w.stream_episode(task_id=k % 3, provenance={{"seed": k}})
            for t in range(200):
                s.append({{key: v[t] for key, v in ep.items()}})
                if t == 150 and k >= 2:
                    print("streaming", k, flush=True)
                    time.sleep(30)
            s.commit(success=True)
            print("committed", k, flush=True)
            k += 1
""")


def test_repair_after_a_killed_writer(tmp_path):
    """SIGKILL a streaming writer with rows of an uncommitted episode on disk; `vmerpo repair`
    then leaves exactly the committed episodes for a zarr-2 ReplayBuffer reader."""
    path = tmp_path / "kill.zarr"
    EpisodeWriter(path, spec(size=64), mode="w").close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT), path=str(path)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        while line and not line.startswith("streaming"):
            line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("streaming 2"), line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    store = EpisodeStore.open(path)
    assert store.n_episodes == 2 and store.leftover["data/image"] >= 85
    with pytest.raises(AssertionError, match="ReplayBuffer"):
        replay_buffer_read(path)
    assert main(["repair", str(path)]) == 0
    root = replay_buffer_read(path)
    assert len(root["meta"]["episode_ends"]) == 2
    for k in range(2):
        check_episode(replay_buffer_episode(root, k), k, 200, 64)
    assert EpisodeStore.open(path).leftover == {}


# -- the command line --------------------------------------------------------------------------
def test_inspect_reports_leftover_rows_and_repair_removes_them(tmp_path, capsys):
    path = make_store(tmp_path / "s.zarr", n=3)
    rows = _add_leftovers(path)
    assert main(["inspect", str(path), "--quick"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("leftover"))
    assert f"data/image {rows}" in line and "meta/episode_task 1" in line
    assert f"vmerpo repair {path}" in line
    assert main(["inspect", str(path), "--quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leftover"]["data/action"] == rows
    assert main(["repair", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove uncommitted rows data/action {rows}," in out and "meta/episode_ends 1" in out
    assert main(["repair", str(path)]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["repair", str(path)]) == 0
    assert "nothing to repair; 3 committed episodes" in capsys.readouterr().out
    assert main(["inspect", str(path), "--quick"]) == 0
    assert not any(x.startswith("leftover") for x in capsys.readouterr().out.splitlines())


def test_repair_refuses_damage_and_missing_stores_in_one_line(tmp_path, capsys):
    path = make_store(tmp_path / "s.zarr", n=2)
    _declare_rows(path, "data/state", 10**12)
    assert main(["repair", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data/state declares" in err
    assert main(["repair", str(tmp_path / "none.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such episode store" in err
