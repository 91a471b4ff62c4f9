"""Episode store (contract 1): round trips, layout, validation errors, streaming, recovery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from learning.store import EpisodeStore, EpisodeWriter, StoreError
from tests.learning.storeutil import check_episode, episode, make_store, spec


@pytest.mark.parametrize("fmt", [2, 3])
def test_round_trip_memory_and_lazy(tmp_path, fmt):
    path = make_store(tmp_path / "s.zarr", n=7, zarr_format=fmt)
    for load in ("memory", "lazy"):
        store = EpisodeStore.open(path, load=load, cache_mb=0.05)
        assert store.load_mode == load and store.zarr_format == fmt
        assert store.n_episodes == 7
        assert store.n_frames == sum(len(episode(k)["image"]) for k in range(7))
        for k in range(7):
            check_episode(store.episode(k), k)
        assert store.episode_task.tolist() == [k % 3 for k in range(7)]
        assert store.episode_success.tolist() == [k % 2 == 0 for k in range(7)]
        assert store.provenance("quality").tolist() == ["expert" if k % 2 == 0 else "medium" for k in range(7)]
        assert store.provenance("seed").tolist() == list(range(7))
        np.testing.assert_allclose(store.episode_returns(), [k * len(episode(k)["image"]) for k in range(7)])


def test_layout_is_diffusion_policy_replay_buffer(tmp_path):
    """A plain zarr-2 reader sees data/<key> concatenated over time and meta/episode_ends."""
    path = make_store(tmp_path / "s.zarr", n=4)
    assert (path / ".zgroup").exists()  # format 2 by default
    root = zarr.open_group(str(path), mode="r")
    ends = root["meta/episode_ends"][:]
    assert ends.tolist() == list(np.cumsum([len(episode(k)["image"]) for k in range(4)]))
    assert root["data/image"].shape == (ends[-1], 16, 16, 3)
    assert root["data/image"].dtype == np.uint8 and root["data/action"].dtype == np.float32
    attrs = json.loads((path / ".zattrs").read_text())
    assert attrs["format"] == "vmerpo.episodes"
    assert attrs["spec"]["action_names"] == ["dx", "dy", "grip"]
    assert attrs["spec"]["tasks"][1]["split"] == "train"


def test_foreign_store_opens_with_a_spec(tmp_path):
    """A store written by someone else (no vmerpo attrs) opens when the caller describes it."""
    path = tmp_path / "foreign.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    ep = episode(3)
    for key, value in ep.items():
        root.create_array(f"data/{key}", data=value, chunks=(5, *value.shape[1:]))
    root.create_array("meta/episode_ends", data=np.array([len(ep["image"])], np.int64))
    root.create_array("meta/episode_task", data=np.array([0], np.int32))
    root.create_array("meta/episode_success", data=np.array([True]))
    with pytest.raises(StoreError, match="no vmerpo spec .*vmerpo spec"):
        EpisodeStore.open(path)
    store = EpisodeStore.open(path, spec=spec())
    check_episode(store.episode(0), 3)


def test_streaming_episode_commits_only_at_the_end(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=2)
    with EpisodeWriter(path, mode="a") as w:
        stream = w.stream_episode(task_id=1, provenance={"quality": "random"})
        ep = episode(5, length=300)  # several image chunks
        for t in range(300):
            stream.append({k: v[t] for k, v in ep.items()})
            if t == 150:  # rows are on disk but not committed: readers see 2 episodes
                assert EpisodeStore.open(path).n_episodes == 2
        index = stream.commit(success=True)
    store = EpisodeStore.open(path)
    assert index == 2 and store.n_episodes == 3
    for key, value in store.episode(2).items():
        np.testing.assert_array_equal(value, ep[key])
    assert store.provenance("quality")[2] == "random"


def test_discarded_stream_leaves_no_rows(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=2)
    with EpisodeWriter(path, mode="a") as w:
        stream = w.stream_episode(task_id=0)
        for t in range(40):
            stream.append({k: v[t] for k, v in episode(9, 40).items()})
        stream.discard()
        w.add_episode(episode(2), task_id=2, success=True)
    store = EpisodeStore.open(path)
    assert store.n_episodes == 3
    check_episode(store.episode(2), 2)


def test_append_recovers_an_uncommitted_tail(tmp_path, capsys):
    path = make_store(tmp_path / "s.zarr", n=3)
    root = zarr.open_group(str(path), mode="r+")
    write_all = {"write_empty_chunks": True}  # as EpisodeWriter writes (complete chunks)
    for key, value in episode(7).items():  # a writer died after the data, before the commit
        root[f"data/{key}"].with_config(write_all).append(value)
    root["meta/episode_task"].with_config(write_all).append(np.array([1], np.int32))
    assert EpisodeStore.open(path).n_episodes == 3  # readers ignore the tail
    messages = []
    with EpisodeWriter(path, mode="a", log=messages.append) as w:
        assert w.n_episodes == 3
        w.add_episode(episode(3), task_id=0, success=False)
    assert any("dropped an incomplete episode" in m for m in messages)
    store = EpisodeStore.open(path)
    assert store.n_episodes == 4 and store.episode_task.tolist() == [0, 1, 2, 0]
    for k in range(4):
        check_episode(store.episode(k), k)


def test_half_appended_commit_entry_is_ignored(tmp_path):
    """Killed between resizing meta/episode_ends and writing its chunk: a trailing 0."""
    path = make_store(tmp_path / "s.zarr", n=3)
    root = zarr.open_group(str(path), mode="r+")
    ends = root["meta/episode_ends"]
    ends.resize((4,))  # the fill value (0) is now the 4th entry
    assert EpisodeStore.open(path).n_episodes == 3
    with EpisodeWriter(path, mode="a", log=lambda m: None) as w:
        assert w.n_episodes == 3


def test_writer_refuses_bad_episodes_and_incompatible_spec(tmp_path):
    path = make_store(tmp_path / "s.zarr", n=1)
    with EpisodeWriter(path, mode="a") as w:
        bad = episode(1)
        bad["action"] = bad["action"][:, :2]
        with pytest.raises(StoreError, match="data/action: shape"):
            w.add_episode(bad, task_id=0, success=False)
        bad = episode(1)
        bad["reward"][3] = np.nan
        with pytest.raises(StoreError, match="data/reward: non-finite"):
            w.add_episode(bad, task_id=0, success=False)
        with pytest.raises(StoreError, match="task id 9"):
            w.add_episode(episode(1), task_id=9, success=False)
        with pytest.raises(StoreError, match="another process"):
            EpisodeWriter(path, mode="a")
    other = spec()
    other.action_names = ["a", "b", "c"]
    with pytest.raises(StoreError, match="action_names"):
        EpisodeWriter(path, spec=other, mode="a")
    with pytest.raises(FileExistsError, match="overwrite"):
        EpisodeWriter(path, spec=spec(), mode="w")
    assert EpisodeStore.open(path).n_episodes == 1


# -- damaged stores: refused with one line that names the array -------------------------------
def _damage(path: Path, how: str) -> str:
    root = zarr.open_group(str(path), mode="r+")
    if how == "lengths":
        root["data/action"].resize((root["data/action"].shape[0] - 5, 3))
        return "data/action"
    if how == "nan":
        a = root["data/action"]
        a[7, 1] = np.nan
        return "data/action"
    if how == "missing":
        shutil.rmtree(path / "data" / "reward")
        return "data/reward"
    if how == "truncated":
        chunk = sorted((path / "data" / "image").glob("[0-9]*"))[0]
        chunk.write_bytes(chunk.read_bytes()[:40])
        return "data/image"
    if how == "missing_chunk":  # zarr would read it as zeros: refused by the chunk check
        sorted((path / "data" / "terminal").glob("[0-9]*"))[0].unlink()
        return "data/terminal"
    if how == "garbled_metadata":
        (path / "data" / "state" / ".zarray").write_text("{not json")
        return "data/state"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["lengths", "nan", "missing", "truncated", "missing_chunk",
                                 "garbled_metadata"])
def test_damaged_store_is_refused_naming_the_array(tmp_path, how):
    path = make_store(tmp_path / "s.zarr", n=5)
    name = _damage(path, how)
    with pytest.raises(StoreError, match=name) as info:
        store = EpisodeStore.open(path, load="memory")
        store.verify()
    assert "\n" not in str(info.value)



def test_fsspec_url_store(tmp_path):
    """Object-storage style URLs go through fsspec (memory:// stands in for s3:// / gs://)."""
    url = f"memory://vmerpo-test/{tmp_path.name}/logs.zarr"
    with EpisodeWriter(url, spec(), mode="w") as w:
        for k in range(3):
            w.add_episode(episode(k), task_id=k % 3, success=True)
    with EpisodeWriter(url, mode="a") as w:
        w.add_episode(episode(3), task_id=0, success=False)
    store = EpisodeStore.open(url, load="lazy")
    assert store.n_episodes == 4
    for k in range(4):
        check_episode(store.episode(k), k)
    with pytest.raises(FileExistsError):
        EpisodeWriter(url, spec(), mode="w")


def test_a_task_outside_the_table_is_refused_before_any_row_and_add_task_extends_it(tmp_path):
    """A streaming episode of an unknown task id is refused at its start (it used to commit,
    after which every reader refused the store); add_task extends the table, persistently."""
    path = make_store(tmp_path / "s.zarr", n=2)  # tasks 0 (test), 1, 2 (train)
    with EpisodeWriter(path, mode="a") as w:
        with pytest.raises(StoreError, match=r"task id 9 is not in the store's task table \[0, 1, 2\]"):
            w.stream_episode(task_id=9)
        assert w.n_frames == EpisodeStore.open(path).n_frames  # nothing written
        assert w.add_task(9, "new goal", split="test") is True
        assert w.add_task(9, split="test") is False  # already there
        with pytest.raises(StoreError, match="with split 'test', not 'train'"):
            w.add_task(9, split="train")
        with pytest.raises(StoreError, match="split 'val': choose train or test"):
            w.add_task(10, split="val")
        stream = w.stream_episode(task_id=9)
        for row in (dict(zip(episode(3).keys(), vals, strict=True)) for vals in zip(*episode(3).values(), strict=True)):
            stream.append(row)
        stream.commit(success=False)
    store = EpisodeStore.open(path)
    assert store.n_episodes == 3 and int(store.episode_task[2]) == 9
    assert store.spec.task_ids("test") == [0, 9] and store.spec.task_ids("train") == [1, 2]
