"""Stores written by other tools: a store written as diffusion_policy's ReplayBuffer writes it
(zarr 2, its own key names, no vmerpo attrs) is inspected, described by `vmerpo spec` and read
by every verb, trained on included; missing arrays are named at once; vmerpo never appends to it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

from learning.store import EpisodeStore, EpisodeWriter, StoreError, StoreSpec, use_spec
from learning.store_foreign import describe, guess_keys, infer_spec, load_spec_file
from tests.learning.test_store_hardening import _snapshot
from vmerpo.benchmarks.faults import replay_buffer_episode, replay_buffer_read
from vmerpo.cli import main

ROOT = Path(__file__).resolve().parents[2]


class ReplayBufferWriter:
    """diffusion_policy's ReplayBuffer with its zarr backend, as it writes a store: an empty
    data/ and meta/ with an uncompressed int64 meta/episode_ends; add_episode creates each
    data/<key> on first use (time-only chunks of about 2 MB, Blosc lz4), resizes every array and
    writes the episode at its end, then appends the new end to meta/episode_ends (recreated with
    1.5x longer chunks when it outgrows its chunk); update_meta writes whole meta arrays."""

    def __init__(self, path: Path) -> None:
        self.root = zarr.open_group(str(path), mode="w", zarr_format=2)
        self.root.require_group("data")
        self.root.require_group("meta").create_array("episode_ends", shape=(0,), chunks=(1,), dtype=np.int64,
                                                     compressors=None)

    @staticmethod
    def _chunks(shape: tuple[int, ...], itemsize: int, target: float = 2e6) -> tuple[int, ...]:
        row = itemsize * math.prod(shape[1:])
        return (max(1, min(shape[0], math.ceil(target / row))), *shape[1:])

    def add_episode(self, data: dict[str, np.ndarray]) -> None:
        ends = self.root["meta/episode_ends"]
        curr = int(ends[-1]) if ends.shape[0] else 0
        length = len(next(iter(data.values())))
        assert all(len(v) == length for v in data.values())
        new_len = curr + length
        for key, value in data.items():
            new_shape = (new_len, *value.shape[1:])
            if f"data/{key}" not in self.root:
                arr = self.root["data"].create_array(
                    key, shape=new_shape, dtype=value.dtype, chunks=self._chunks(new_shape, value.dtype.itemsize),
                    compressors=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE))
            else:
                arr = self.root[f"data/{key}"]
                arr.resize(new_shape)
            arr[-length:] = value
        ends.resize((ends.shape[0] + 1,))
        ends[-1] = new_len
        if ends.chunks[0] < ends.shape[0]:  # rechunk_recompress_array(meta, "episode_ends", 1.5x)
            values = ends[:]
            self.root["meta"].create_array("episode_ends", data=values, chunks=(int(len(values) * 1.5),),
                                           compressors=None, overwrite=True)

    def update_meta(self, values: dict[str, np.ndarray]) -> None:
        for key, value in values.items():
            self.root["meta"].create_array(key, data=value, chunks=value.shape, overwrite=True)


SIZE = 32


def rb_episode(k: int, length: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(k)
    img = rng.integers(0, 256, (length, SIZE, SIZE, 3), dtype=np.uint8)
    return {
        "img": img,
        "agent_pos": rng.normal(size=(length, 2)),  # float64, as many tools write
        "action": rng.uniform(-2, 3, (length, 2)).astype(np.float32),
        "reward": np.linspace(0, 1, length, dtype=np.float32) * (k % 2),
        "keypoint": rng.normal(size=(length, 9, 2)).astype(np.float32),  # an array vmerpo does not use
    }


def write_rb_store(path: Path, n: int = 6, tasks: bool = True, drop: tuple[str, ...] = ()) -> Path:
    rb = ReplayBufferWriter(path)
    for k in range(n):
        rb.add_episode({key: v for key, v in rb_episode(k).items() if key not in drop})
    if tasks:
        rb.update_meta({"task": np.array([k % 2 for k in range(n)], np.int64)})
    return path


def vmerpo(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmerpo", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(autouse=True)
def _no_spec_files():
    yield
    use_spec(None)  # --spec FILE of an in-process main() call is process-wide


def test_common_names_map_to_ours():
    assert guess_keys(["img", "agent_pos", "actions", "rewards", "dones"], ["episode_ends", "task"]) == {
        "image": "img", "state": "agent_pos", "action": "actions", "reward": "rewards", "terminal": "dones",
        "episode_task": "task"}
    assert guess_keys(["image", "state", "action", "obs"], []) == {"image": "image", "state": "state",
                                                                  "action": "action"}


def test_a_replay_buffer_store_is_inspected_described_and_read(tmp_path, capsys):
    path = write_rb_store(tmp_path / "rb.zarr")
    before = replay_buffer_read(path)
    # without a spec: described, not refused
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("written by another tool", "6 episodes, 120 frames", "data/img", "32x32x3", "data/keypoint",
                 "image <- img", "state <- agent_pos", "episode_task <- task", "not yet trainable", "vmerpo spec"):
        assert text in out, (text, out)
    assert "terminal: no terminations" in out and "episode_success: success unknown" in out
    with pytest.raises(StoreError, match="no vmerpo spec.*vmerpo spec"):
        EpisodeStore.open(path)

    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta", "--robot", "pusher"]) == 0
    assert "wrote the spec into" in capsys.readouterr().out
    store = EpisodeStore.open(path)
    assert store.foreign and store.n_episodes == 6 and store.n_frames == 120
    assert store.spec.image_size == SIZE and store.spec.control_hz == 10 and store.spec.robot == "pusher"
    assert store.spec.keys == {"image": "img", "state": "agent_pos", "episode_task": "task"}
    assert sorted(store.spec.absent) == ["episode_success", "terminal", "timestamp"]
    assert [t["id"] for t in store.spec.tasks] == [0, 1] and store.episode_task.tolist() == [0, 1] * 3
    for k in range(6):
        ep, ref = store.episode(k), rb_episode(k)
        np.testing.assert_array_equal(ep["image"], ref["img"])
        np.testing.assert_array_equal(ep["state"], ref["agent_pos"].astype(np.float32))
        assert ep["state"].dtype == np.float32
        np.testing.assert_array_equal(ep["action"], ref["action"])
        np.testing.assert_array_equal(ep["reward"], ref["reward"])
        np.testing.assert_array_equal(ep["keypoint"], ref["keypoint"])
        assert not ep["terminal"].any()
        np.testing.assert_allclose(ep["timestamp"], np.arange(20) / 10.0)
    # the action limits are the range seen
    actions = np.concatenate([rb_episode(k)["action"] for k in range(6)])
    np.testing.assert_allclose(store.spec.action_low, actions.min(0), rtol=1e-6)
    np.testing.assert_allclose(store.spec.action_high, actions.max(0), rtol=1e-6)
    # the other tool still reads exactly what it wrote
    after = replay_buffer_read(path)
    for i in range(6):
        for key, value in replay_buffer_episode(before, i).items():
            np.testing.assert_array_equal(replay_buffer_episode(after, i)[key], value)
    # described: inspect validates and summarises it like a vmerpo store
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "written by another tool; keys image <- img" in out and "success unknown" in out
    assert main(["inspect", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["success_rate"] is None and summary["absent"] == ["terminal", "timestamp", "episode_success"]


def test_missing_arrays_are_named_at_once(tmp_path, capsys):
    path = write_rb_store(tmp_path / "rb.zarr", drop=("action", "reward"))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "data/action:" in out and "data/reward:" in out and "not yet trainable" in out
    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data/action" in err and "data/reward" in err, err
    assert "spec" not in json.loads((path / ".zattrs").read_text() or "{}")
    # a spec that maps them anyway: the reader names every missing array in one line
    spec = StoreSpec(robot="r", control_hz=10, image_size=SIZE, state_names=["a", "b"], action_names=["x", "y"],
                     action_low=[-1, -1], action_high=[1, 1], tasks=[{"id": 0, "split": "train"}],
                     keys={"image": "img", "state": "agent_pos"}, absent=["terminal", "timestamp", "episode_task",
                                                                          "episode_success"])
    with pytest.raises(StoreError, match="missing arrays data/action, data/reward") as e:
        EpisodeStore.open(path, spec=spec)
    assert "\n" not in str(e.value)


def test_the_rate_and_action_type_must_be_given(tmp_path, capsys):
    path = write_rb_store(tmp_path / "rb.zarr")
    assert main(["spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--control-hz HZ and --action-type TYPE" in err and len(err.strip().splitlines()) == 1


def test_a_spec_file_reads_a_store_left_untouched(tmp_path, capsys):
    """For a store one may not write to: `vmerpo spec --out FILE`, then `--spec FILE` on every verb."""
    path = write_rb_store(tmp_path / "rb.zarr")
    files = _snapshot(path)
    (tmp_path / "base.yaml").write_text("robot: lab arm\naction_type: joint_velocity\nstate_names: [q0, q1]\n")
    assert main(["spec", str(path), "--from", str(tmp_path / "base.yaml"), "--control-hz", "15",
                 "--key", "state=agent_pos", "--task", "0:reach:train", "--task", "1:push:test",
                 "--out", str(tmp_path / "spec.yaml")]) == 0
    capsys.readouterr()
    assert _snapshot(path) == files  # nothing written into the store
    spec = load_spec_file(tmp_path / "spec.yaml")
    assert spec.robot == "lab arm" and spec.control_hz == 15 and spec.state_names == ["q0", "q1"]
    assert [(t["name"], t["split"]) for t in spec.tasks] == [("reach", "train"), ("push", "test")]
    assert main(["inspect", str(path), "--spec", str(tmp_path / "spec.yaml"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["robot"] == "lab arm" and summary["tasks"]["1"]["split"] == "test"
    assert summary["tasks"]["1"]["episodes"] == 3
    # a spec file never overrides a store's own spec
    use_spec(None)
    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta"]) == 0
    use_spec(spec)
    assert EpisodeStore.open(path).spec.control_hz == 10


def test_an_explicit_key_maps_an_uncommon_name(tmp_path):
    path = tmp_path / "cams.zarr"
    rb = ReplayBufferWriter(path)
    for k in range(2):
        ep = rb_episode(k)
        rb.add_episode({"camera_1": ep["img"], "robot_eef_pose": ep["agent_pos"], "action": ep["action"],
                        "reward": ep["reward"]})
    d = describe(path)
    assert any("data/image" in m for m in d["missing_for_training"])
    assert any("data/state" in m for m in d["missing_for_training"])
    spec = infer_spec(path, {"control_hz": 5, "action_type": "twist"},
                      keys={"image": "camera_1", "state": "robot_eef_pose"})
    assert spec.keys == {"image": "camera_1", "state": "robot_eef_pose"}
    assert spec.tasks == [{"id": 0, "name": "task 0", "split": "train"}] and "episode_task" in spec.absent
    store = EpisodeStore.open(path, spec=spec)
    np.testing.assert_array_equal(store.episode(1)["image"], rb_episode(1)["img"])
    assert store.episode_task.tolist() == [0, 0]


def test_vmerpo_never_appends_to_another_tools_store(tmp_path):
    path = write_rb_store(tmp_path / "rb.zarr")
    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta"]) == 0
    files = _snapshot(path)
    with pytest.raises(StoreError, match="not written by vmerpo"):
        EpisodeWriter(path, mode="a")
    assert {k: v for k, v in _snapshot(path).items() if not k.endswith(".lock")} == \
        {k: v for k, v in files.items() if not k.endswith(".lock")}
    with pytest.raises(StoreError, match="another tool's store"):
        EpisodeWriter(tmp_path / "new.zarr", EpisodeStore.open(path).spec, mode="w")


def test_vmerpo_spec_refuses_a_vmerpo_store_and_an_existing_spec(tmp_path, capsys):
    from tests.learning.storeutil import make_store

    own = make_store(tmp_path / "own.zarr", n=2)
    assert main(["spec", str(own), "--control-hz", "10", "--action-type", "ee_delta"]) == 2
    assert "is a vmerpo store" in capsys.readouterr().err
    path = write_rb_store(tmp_path / "rb.zarr")
    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta"]) == 0
    assert main(["spec", str(path), "--control-hz", "20", "--action-type", "ee_delta"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["spec", str(path), "--control-hz", "20", "--action-type", "ee_delta", "--force"]) == 0
    assert EpisodeStore.open(path).spec.control_hz == 20


def test_vmerpo_train_meta_trains_on_a_replay_buffer_store(tmp_path):
    """`vmerpo train` (world model + MerPO, tiny preset) on the described ReplayBuffer store: both
    of its tasks are meta-trained on."""
    path = write_rb_store(tmp_path / "rb.zarr", n=6)
    proc = vmerpo("spec", str(path), "--control-hz", "10", "--action-type", "ee_delta",
                  "--out", str(tmp_path / "spec.yaml"))
    assert proc.returncode == 0, proc.stderr
    proc = vmerpo("train", "--data", str(path), "--spec", str(tmp_path / "spec.yaml"), "--config", "tiny",
                  "--out", str(tmp_path / "run"), "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints").is_dir()
    info = json.loads(proc.stdout)
    assert sorted(info["tasks"]) == [0, 1] and info["meta_steps"] > 0, info
    assert json.loads((tmp_path / "run" / "config.json").read_text())["meta_train_tasks"] == [0, 1]

    # and exported from it: the run reads its training store again, through the same spec file
    onnx_path = tmp_path / "p.onnx"
    proc = vmerpo("export", "--run", str(tmp_path / "run"), "--out", str(onnx_path))
    assert proc.returncode == 2 and "--spec FILE" in proc.stderr, proc.stderr
    proc = vmerpo("export", "--run", str(tmp_path / "run"), "--out", str(onnx_path), "--spec",
                  str(tmp_path / "spec.yaml"), "--check", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["spec"]["image_size"] == SIZE and onnx_path.stat().st_size > 0


def test_an_explicit_key_to_no_array_is_refused_not_read_as_absent(tmp_path, capsys):
    """A typo in --key episode_task=NAME must not turn a two-task store into one task."""
    path = write_rb_store(tmp_path / "rb.zarr")
    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta",
                 "--key", "episode_task=task_idz", "--out", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "meta/task_idz (mapped by --key episode_task=task_idz)" in err, err
    assert not (tmp_path / "s.yaml").exists()
    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta", "--key", "image=pixels"]) == 2
    assert "data/pixels (mapped by --key image=pixels): no such array" in capsys.readouterr().err
    with pytest.raises(StoreError, match="keys maps 'episode_task' to 'task' and absent lists it too"):
        StoreSpec(robot="r", control_hz=10, image_size=SIZE, state_names=["a", "b"], action_names=["x", "y"],
                  action_low=[-1, -1], action_high=[1, 1], tasks=[{"id": 0}], keys={"episode_task": "task"},
                  absent=["episode_task"])


def test_spec_files_of_the_wrong_form_are_one_line_naming_the_file_and_field(tmp_path, capsys):
    path = write_rb_store(tmp_path / "rb.zarr")
    for text, want in (("control_hz: 10\naction_type: ee_delta\ntasks: 5\n", "spec field tasks must be a list"),
                       ("control_hz: 10\naction_type: ee_delta\nkeys: [img]\n", "spec field keys must be an object"),
                       ("control_hz: 10\naction_type: ee_delta\nkeys: {image: 5}\n",
                        "spec field keys must be an object")):
        (tmp_path / "from.yaml").write_text(text)
        assert main(["spec", str(path), "--from", str(tmp_path / "from.yaml"), "--out", str(tmp_path / "o.yaml")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and want in err and "TypeError" not in err, err
    (tmp_path / "partial.yaml").write_text("control_hz: 10\n")
    assert main(["inspect", str(path), "--spec", str(tmp_path / "partial.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"spec file {tmp_path / 'partial.yaml'} lacks robot, image_size" in err, err
    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta",
                 "--out", str(tmp_path / "good.json")]) == 0
    fields = json.loads((tmp_path / "good.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps({**fields, "absent": "terminal"}))
    assert main(["inspect", str(path), "--spec", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"spec file {tmp_path / 'bad.json'}: spec field absent must be a list" in err, err


@pytest.mark.parametrize("task", [np.array([0.5, 1, 0, 1, 0, 1]), np.array([[0, 1]] * 6, np.int64)])
def test_task_ids_that_are_not_one_integer_per_episode_are_named(tmp_path, capsys, task):
    """Float task ids were truncated (0.5 -> 0: 'duplicate task ids'); a 2-D array gave
    'TypeError: unhashable type'. Both name the array, through `vmerpo spec` and the reader."""
    path = write_rb_store(tmp_path / "rb.zarr", tasks=False)
    zarr.open_group(str(path), mode="r+")["meta"].create_array("task", data=task, chunks=task.shape)
    assert main(["spec", str(path), "--control-hz", "10", "--action-type", "ee_delta"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "meta/task has entries of shape" in err and "TypeError" not in err, err
    spec = StoreSpec(robot="r", control_hz=10, image_size=SIZE, state_names=["a", "b"], action_names=["x", "y"],
                     action_low=[-2, -2], action_high=[3, 3], tasks=[{"id": 0}, {"id": 1}],
                     keys={"image": "img", "state": "agent_pos", "episode_task": "task"},
                     absent=["terminal", "timestamp", "episode_success"])
    with pytest.raises(StoreError, match="meta/task has entries of shape .* one integer per episode"):
        EpisodeStore.open(path, spec=spec)


def test_an_unknown_field_in_a_spec_file_is_refused(tmp_path, capsys):
    path = write_rb_store(tmp_path / "rb.zarr")
    (tmp_path / "base.yaml").write_text("control_hz: 10\naction_type: ee_delta\naction_lowz: [-1, -1]\n")
    assert main(["spec", str(path), "--from", str(tmp_path / "base.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown spec field action_lowz" in err and len(err.splitlines()) == 1
