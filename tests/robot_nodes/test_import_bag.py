"""`vmerpo import-bag`: rosbag2 (sqlite3 and MCAP) -> episode store, alignment, episode
splitting and the three reward sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000_000_000
CAM_DT = 33_000_000


def write_bag(path: Path, storage: str, episodes=(12, 9), gap_s=2.0, frame_stamped=False, bad=(),
              image_lag_ns=0, stamped_joints=True, t0=T0, compressed=False, joint_phase_ns=None) -> None:
    """Camera 30 Hz (80x60 bgr8, pixel = frame index), joint states 100 Hz (position 0 = its
    time in s since T0), a command 5 ms after each image (value = frame index / 100), a reward
    after each command, success. Frames in `bad` carry a truncated image (undecodable). An
    image is logged `image_lag_ns` after its capture (its header stamp); joint states without
    a header stamp unless `stamped_joints`. `compressed`: JPEG CompressedImage messages.
    `joint_phase_ns`: joint states on a 100 Hz grid of their own (this phase, unaligned with
    the camera, through the pauses too), each logged 2 ms after its stamp."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.LATEST)
    T = ts.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3

    def stamp(ns):
        return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam")

    msgs = []  # (t, topic, type, msg)
    frame, t_ep = 0, t0
    for n in episodes:
        for k in range(n):
            t = t_ep + k * CAM_DT
            for j in range(4 if joint_phase_ns is None else 0):
                jt = t - 10_000_000 + j * 10_000_000
                msgs.append((jt, "/joint_states", "sensor_msgs/msg/JointState", T["sensor_msgs/msg/JointState"](
                    header=stamp(jt if stamped_joints else 0), name=["a", "b"], position=np.array([jt * 1e-9 - T0 * 1e-9, 1.0]),
                    velocity=np.zeros(0), effort=np.zeros(0))))
            img = np.full((60, 80, 3), frame % 256, np.uint8)
            if compressed:
                import cv2

                jpeg = cv2.imencode(".jpg", img)[1].reshape(-1)
                msgs.append((t, "/cam/image", "sensor_msgs/msg/CompressedImage", T["sensor_msgs/msg/CompressedImage"](
                    header=stamp(t - image_lag_ns), format="bgr8; jpeg compressed bgr8",
                    data=jpeg[: 100 if frame in bad else None])))
            else:
                msgs.append((t, "/cam/image", "sensor_msgs/msg/Image", T["sensor_msgs/msg/Image"](
                    header=stamp(t - image_lag_ns), height=60, width=80, encoding="bgr8", is_bigendian=0, step=240,
                    data=img.reshape(-1)[: 100 if frame in bad else None])))
            label = f"frame_stamp_ns={t - image_lag_ns}" if frame_stamped else "action"
            layout = T["std_msgs/msg/MultiArrayLayout"](dim=[T["std_msgs/msg/MultiArrayDimension"](
                label=label, size=2, stride=2)], data_offset=0)
            msgs.append((t + 5_000_000, "/cmd", "std_msgs/msg/Float64MultiArray", T["std_msgs/msg/Float64MultiArray"](
                layout=layout, data=np.array([frame / 100.0, -frame / 100.0]))))
            msgs.append((t + 6_000_000, "/reward", "std_msgs/msg/Float64", T["std_msgs/msg/Float64"](data=float(frame))))
            frame += 1
        msgs.append((t + 7_000_000, "/success", "std_msgs/msg/Bool", T["std_msgs/msg/Bool"](data=n % 2 == 0)))
        t_ep = t + int(gap_s * 1e9)
    if joint_phase_ns is not None:
        for jt in range(t0 - 50_000_000 + joint_phase_ns, t + 50_000_000, 10_000_000):
            msgs.append((jt + 2_000_000, "/joint_states", "sensor_msgs/msg/JointState", T["sensor_msgs/msg/JointState"](
                header=stamp(jt if stamped_joints else 0), name=["a", "b"], position=np.array([(jt - T0) * 1e-9, 1.0]),
                velocity=np.zeros(0), effort=np.zeros(0))))
    msgs.sort(key=lambda m: m[0])
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for t, topic, typ, msg in msgs:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=ts)
            w.write(conns[topic], t, ts.serialize_cdr(msg, typ))


def vmerpo(*args):
    return subprocess.run([sys.executable, "-m", "vmerpo", "import-bag", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_import_aligns_splits_and_takes_the_reward_topic(tmp_path, storage):
    from learning.store import EpisodeStore

    bag = tmp_path / f"bag_{storage}"
    write_bag(bag, storage)
    out = tmp_path / "logs.zarr"
    r = vmerpo(bag, "--out", out, "--image-topic", "/cam/image", "--command-topic", "/cmd",
               "--joint-states-topic", "/joint_states", "--task-id", "3", "--reward-topic", "/reward",
               "--action-names", "vx,vy", "--action-low=-1,-1", "--action-high", "1,1", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["episodes_imported"] == 2 and summary["rows"] == 21
    s = EpisodeStore.open(out)
    assert list(s.episode_lengths) == [12, 9] and list(s.episode_task) == [3, 3]
    frames = np.arange(21)
    img = np.concatenate([s.episode(i)["image"] for i in range(2)])
    act = np.concatenate([s.episode(i)["action"] for i in range(2)])
    rew = np.concatenate([s.episode(i)["reward"] for i in range(2)])
    assert img.shape[1:] == (64, 64, 3) and np.all(img[:, 0, 0, 0] == frames)
    assert np.allclose(act[:, 0], frames / 100.0) and np.allclose(act[:, 1], -frames / 100.0)
    assert np.allclose(rew, frames)
    st = s.episode(0)["state"]
    # Newest joint state at or before the image: logged exactly at the image time.
    assert np.allclose(st[:, 0], np.arange(12) * CAM_DT * 1e-9, atol=1e-5)
    assert s.spec.camera["crop"] == "center" and s.spec.camera["source_size"] == [60, 80]
    assert s.spec.reward_source == {"type": "topic", "topic": "/reward"}


def test_sparse_success_from_command_line_and_topic(tmp_path):
    from learning.store import EpisodeStore

    bag = tmp_path / "bag"
    write_bag(bag, "mcap", frame_stamped=True)
    common = ["--image-topic", "/cam/image", "--command-topic", "/cmd", "--joint-states-topic", "/joint_states"]
    r = vmerpo(bag, "--out", tmp_path / "a.zarr", *common, "--reward", "sparse-success", "--success", "0,1")
    assert r.returncode == 0, r.stderr
    s = EpisodeStore.open(tmp_path / "a.zarr")
    assert list(s.episode_success) == [False, True]
    assert s.episode(1)["reward"][-1] == 1.0 and s.episode(0)["reward"].sum() == 0
    r = vmerpo(bag, "--out", tmp_path / "b.zarr", *common, "--reward", "sparse-success", "--success-topic", "/success")
    assert r.returncode == 0, r.stderr
    assert list(EpisodeStore.open(tmp_path / "b.zarr").episode_success) == [True, False]
    r = vmerpo(bag, "--out", tmp_path / "c.zarr", *common, "--reward", "sparse-success", "--success", "1")
    assert r.returncode == 2 and "splits into 2 episodes" in r.stderr


def test_reward_function_and_bad_input(tmp_path):
    from learning.store import EpisodeStore

    bag = tmp_path / "bag"
    write_bag(bag, "sqlite3")
    (tmp_path / "my_reward.py").write_text(
        "import numpy as np\ndef r(ep, success):\n    return -np.abs(ep['action'][:, 0])\n")
    common = ["--image-topic", "/cam/image", "--command-topic", "/cmd", "--joint-states-topic", "/joint_states"]
    env_path = f"{tmp_path}"
    r = subprocess.run([sys.executable, "-m", "vmerpo", "import-bag", str(bag), "--out", str(tmp_path / "f.zarr"),
                        *common, "--reward-fn", "my_reward:r"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**__import__("os").environ, "PYTHONPATH": env_path})
    assert r.returncode == 0, r.stderr
    s = EpisodeStore.open(tmp_path / "f.zarr")
    assert np.allclose(s.episode(0)["reward"], -np.arange(12) / 100.0)
    r = vmerpo(bag, "--out", tmp_path / "g.zarr", "--image-topic", "/nope", "--command-topic", "/cmd",
               "--joint-states-topic", "/joint_states", "--reward-topic", "/reward")
    assert r.returncode == 2 and "no topic /nope" in r.stderr
    r = vmerpo(bag, "--out", tmp_path / "f.zarr", *common, "--reward-topic", "/reward")
    assert r.returncode == 2 and "exists" in r.stderr


def test_marker_topic_splits_episodes(tmp_path):
    """Markers split a bag with no camera pause: each marker starts a new episode."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from learning.store import EpisodeStore

    src = tmp_path / "src"
    write_bag(src, "sqlite3", episodes=(20,))
    ts = get_typestore(Stores.LATEST)
    bag = tmp_path / "marked"
    with Reader(src) as r, Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=ts) for c in r.connections}
        marker = w.add_connection("/episode_start", "std_msgs/msg/Empty", typestore=ts)
        empty = ts.serialize_cdr(ts.types["std_msgs/msg/Empty"](), "std_msgs/msg/Empty")
        marked = False
        for c, t, raw in r.messages():
            if not marked and t >= T0 + 8 * CAM_DT - 1_000_000:
                w.write(marker, t, empty)
                marked = True
            w.write(conns[c.id], t, raw)
    r = vmerpo(bag, "--out", tmp_path / "m.zarr", "--image-topic", "/cam/image", "--command-topic", "/cmd",
               "--joint-states-topic", "/joint_states", "--reward-topic", "/reward",
               "--episode-marker-topic", "/episode_start")
    assert r.returncode == 0, r.stderr
    assert list(EpisodeStore.open(tmp_path / "m.zarr").episode_lengths) == [8, 12]


def test_bags_of_two_tasks_append_with_default_options_and_extend_the_task_table(tmp_path):
    """Two bags of task 3 and one of task 4 append into one store with no limits or rate given
    (they come from the store); task 4 joins the table with its split. A bag whose commands
    leave the store's limits is refused in one line with the numbers."""
    from learning.store import EpisodeStore

    out = tmp_path / "logs.zarr"
    common = ["--out", out, "--image-topic", "/cam/image", "--command-topic", "/cmd",
              "--joint-states-topic", "/joint_states", "--reward-topic", "/reward"]
    for i, (task, split) in enumerate(((3, "train"), (3, "train"), (4, "test"))):
        bag = tmp_path / f"bag{i}"
        write_bag(bag, "mcap")
        r = vmerpo(bag, *common, "--task-id", task, "--split", split, *(["--append"] if i else []))
        assert r.returncode == 0, r.stderr
    assert "task 4 added to" in r.stderr
    s = EpisodeStore.open(out)
    assert list(s.episode_task) == [3, 3, 3, 3, 4, 4]
    assert s.spec.task_ids("train") == [3] and s.spec.task_ids("test") == [4]
    bag = tmp_path / "wide"
    write_bag(bag, "mcap", episodes=(30,))  # commands up to 0.29; the store's limits end at 0.20
    r = vmerpo(bag, *common, "--task-id", 3, "--append")
    assert r.returncode == 2 and "outside" in r.stderr and "action limits" in r.stderr, r.stderr
    assert "in one batch" in r.stderr  # what to do instead: the limits of a store are fixed
    assert len(r.stderr.strip().splitlines()) == 1
    assert EpisodeStore.open(out).n_episodes == 6


def test_an_undecodable_frame_is_skipped_and_counted_or_refused_leaving_no_store(tmp_path):
    from learning.store import EpisodeStore

    bag = tmp_path / "bag"
    write_bag(bag, "mcap", bad=(5,))
    args = ["--image-topic", "/cam/image", "--command-topic", "/cmd", "--joint-states-topic", "/joint_states",
            "--reward-topic", "/reward"]
    out = tmp_path / "refused.zarr"
    r = vmerpo(bag, "--out", out, *args, "--bad-frames", "refuse")
    assert r.returncode == 2 and "image message 5" in r.stderr and "episode 0, row 5" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()  # a failed import leaves no store behind: the rerun starts clean
    out = tmp_path / "logs.zarr"
    r = vmerpo(bag, "--out", out, *args, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["frames_skipped"] == 1 and summary["frames_skipped_per_episode"] == {"0": 1, "1": 0}
    s = EpisodeStore.open(out)
    assert list(s.episode_lengths) == [11, 9] and list(s.provenance("frames_skipped")) == [1, 0]
    img = s.episode(0)["image"][:, 0, 0, 0]
    assert list(img) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]  # frame 5's row is gone, the rest aligned
    assert np.allclose(s.episode(0)["action"][:, 0], img / 100.0)


def test_state_is_the_newest_joint_state_stamped_at_or_before_the_image_not_by_log_time(tmp_path):
    """The camera's images reach the bag 25 ms after their capture (header stamp), as on a
    robot: the state is the newest joint state *stamped* at or before the capture, the rule
    recorder_node and policy_node follow (by log time it would be 25 ms later). A frame with
    no joint state before its capture is no row; commands naming frames still pair exactly."""
    from learning.store import EpisodeStore

    lag = 25_000_000
    bag = tmp_path / "bag"
    write_bag(bag, "mcap", episodes=(12,), image_lag_ns=lag, frame_stamped=True)
    out = tmp_path / "logs.zarr"
    r = vmerpo(bag, "--out", out, "--image-topic", "/cam/image", "--command-topic", "/cmd",
               "--joint-states-topic", "/joint_states", "--reward-topic", "/reward", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["rows_log_time"] == 0 and summary["ticks_dropped"] == 1, summary
    ep = EpisodeStore.open(out).episode(0)
    frames = np.arange(1, 12)  # frame 0 was captured before the first joint state: dropped
    capture = frames * CAM_DT - lag  # ns since T0
    # joint states every 10 ms from -10 ms around each frame: the newest at or before the capture
    js = np.array(sorted({k * CAM_DT + d for k in range(12) for d in (-10_000_000, 0, 10_000_000, 20_000_000)}))
    want = np.array([js[js <= c].max() for c in capture]) * 1e-9
    assert np.allclose(ep["state"][:, 0], want, atol=1e-6)
    assert not np.allclose(ep["state"][:, 0], frames * CAM_DT * 1e-9, atol=1e-6)  # what log time gave
    assert np.allclose(ep["timestamp"] - T0 * 1e-9, capture * 1e-9, atol=1e-6)  # the header stamp
    assert np.all(ep["image"][:, 0, 0, 0] == frames) and np.allclose(ep["action"][:, 0], frames / 100.0)


def test_joint_states_without_a_header_stamp_pair_by_log_time_and_say_so(tmp_path):
    from learning.store import EpisodeStore

    bag = tmp_path / "bag"
    write_bag(bag, "sqlite3", stamped_joints=False)
    out = tmp_path / "logs.zarr"
    r = vmerpo(bag, "--out", out, "--image-topic", "/cam/image", "--command-topic", "/cmd",
               "--joint-states-topic", "/joint_states", "--reward-topic", "/reward")
    assert r.returncode == 0, r.stderr
    assert "21 rows paired by bag log time" in r.stderr and "21 rows paired by log time" in r.stdout, r
    s = EpisodeStore.open(out)
    assert list(s.provenance("rows_log_time")) == [12, 9]
    assert np.allclose(s.episode(0)["state"][:, 0], np.arange(12) * CAM_DT * 1e-9, atol=1e-5)


BAG_ARGS = ["--image-topic", "/cam/image", "--command-topic", "/cmd", "--joint-states-topic", "/joint_states",
            "--reward-topic", "/reward"]


def test_a_directory_of_bags_and_a_manifest_import_into_one_store_with_one_summary(tmp_path):
    """`import-bag DIR --manifest FILE`: the two bags in DIR (sorted) of task 3, then the
    manifest's bag of task 4, into one store with default options; one summary at the end."""
    from learning.store import EpisodeStore

    (tmp_path / "bags").mkdir()
    write_bag(tmp_path / "bags" / "b_second", "sqlite3")
    write_bag(tmp_path / "bags" / "a_first", "mcap")
    (tmp_path / "other").mkdir()
    # other episode lengths and pauses: the same camera rate all the same (measured within episodes)
    write_bag(tmp_path / "other" / "place", "mcap", episodes=(10, 8), gap_s=3.5)
    (tmp_path / "other" / "notes.txt").write_text("not a bag")
    manifest = tmp_path / "more.yaml"
    manifest.write_text("- {bag: other/place, task_id: 4, task_name: place, split: train}\n")
    out = tmp_path / "logs.zarr"
    r = vmerpo(tmp_path / "bags", "--manifest", manifest, "--out", out, *BAG_ARGS, "--task-id", 3,
               "--task-name", "pick")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("imported 6 episodes (60 frames) from 3 bags into") and len(lines) == 6, r.stdout
    rows = [ln.split() for ln in lines[2:]]
    assert [Path(x[0]).name for x in rows[:3]] == ["a_first", "b_second", "place"]
    assert [x[1:4] for x in rows[:3]] == [["3", "2", "21"], ["3", "2", "21"], ["4", "2", "18"]]
    assert rows[3][:3] == ["total", "(3", "bags)"] and rows[3][3:5] == ["6", "60"]
    assert "[3/3]" in r.stderr and "task 4 added to" in r.stderr
    s = EpisodeStore.open(out)
    assert list(s.episode_task) == [3, 3, 3, 3, 4, 4] and list(s.episode_lengths) == [12, 9, 12, 9, 10, 8]
    assert s.spec.task_ids("train") == [3, 4]
    assert {t["id"]: t["name"] for t in s.spec.tasks} == {3: "pick", 4: "place"}
    bags = [Path(b).name for b in s.provenance("bag")]
    assert bags == ["a_first", "a_first", "b_second", "b_second", "place", "place"]
    assert list(s.provenance("bag_episode")) == [0, 1, 0, 1, 0, 1]


def test_a_failing_bag_names_what_was_imported_and_a_rerun_with_append_continues(tmp_path):
    """The second of three bags fails in its second episode (an undecodable frame, refused):
    one line names it, the bag imported before it, its episode already committed and the bag
    not tried. Everything committed stays; rerunning with --append imports exactly the rest."""
    from learning.store import EpisodeStore

    bags = tmp_path / "bags"
    bags.mkdir()
    write_bag(bags / "a", "mcap")
    write_bag(bags / "b", "mcap", bad=(15,))  # frame 15: episode 1, row 3
    write_bag(bags / "c", "mcap")
    out = tmp_path / "logs.zarr"
    r = vmerpo(bags, "--out", out, *BAG_ARGS, "--bad-frames", "refuse")
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("vmerpo import-bag: error: bag 2 of 3, ") and f"{bags / 'b'}, failed: " in err, err
    assert "image message 15" in err and "1 bag(s) imported before it stay in" in err
    assert "1 of this bag's episodes stay" in err and f"not tried: {bags / 'c'}" in err
    assert "rerun with --append" in err
    s = EpisodeStore.open(out)
    assert [Path(b).name for b in s.provenance("bag")] == ["a", "a", "b"]
    r = vmerpo(bags, "--out", out, *BAG_ARGS, "--append", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert [b["episodes_already_in_store"] for b in result["bags"]] == [2, 1, 0]
    assert [b["episodes_imported"] for b in result["bags"]] == [0, 1, 2] and result["total"]["episodes_in_store"] == 6
    s = EpisodeStore.open(out)
    assert [Path(b).name for b in s.provenance("bag")] == ["a", "a", "b", "b", "c", "c"]
    assert list(s.provenance("bag_episode")) == [0, 1, 0, 1, 0, 1]
    assert list(s.episode_lengths) == [12, 9, 12, 8, 12, 9]  # b's frame 15 skipped on the rerun


def test_bag_lists_and_manifests_are_checked_before_anything_is_imported(tmp_path):
    from learning.bag_import import expand_bags, read_manifest

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nor a directory of bags"):
        expand_bags([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="not found"):
        expand_bags([tmp_path / "nope"])
    (tmp_path / "x.mcap").write_bytes(b"")
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_text("")
    assert expand_bags([tmp_path]) == [str(tmp_path / "bag"), str(tmp_path / "x.mcap")]
    assert expand_bags([tmp_path / "bag"]) == [str(tmp_path / "bag")]
    m = tmp_path / "m.json"
    for text, match in (('{"bag": "x.mcap"}', "expected a list"),
                        ('[{"bag": "x.mcap", "task": 1}]', r"unknown keys \['task'\]"),
                        ('[{"bag": "x.mcap"}]', "task_id"),
                        ('[{"bag": "x.mcap", "task_id": 1, "split": "val"}]', "split"),
                        ('[{"bag": "x.mcap", "task_id": 1', "not valid JSON")):
        m.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_manifest(m)
    m.write_text('[{"bag": "x.mcap", "task_id": 1, "success": [1, 0]}, {"bag": ".", "task_id": 2, "split": "test"}]')
    got = read_manifest(m)
    assert [(Path(e["bag"]).name, e["task_id"], e["split"], e["success"]) for e in got] == [
        ("x.mcap", 1, "train", [True, False]), ("bag", 2, "test", None), ("x.mcap", 2, "test", None)]
    r = vmerpo(tmp_path / "bag", "--out", tmp_path / "o.zarr", *BAG_ARGS[:-2], "--reward", "sparse-success",
               "--manifest", m)
    assert r.returncode == 2 and "listed twice" in r.stderr, r.stderr


def test_bags_of_two_tasks_append_with_default_options_and_vmerpo_train_meta_trains_on_them(tmp_path):
    """Bags as a robot records them (JPEG CompressedImage at 30 Hz captured 25 ms
    before it is logged, joint states at 100 Hz on their own clock phase, a forward-command
    topic): two of task 3 (one batch: the store's default limits span both bags' commands) and
    one of task 4 (--append, default options) go into one store; the states are the newest
    stamped at or before each capture; `vmerpo train` (tiny preset) meta-trains on both tasks."""
    pytest.importorskip("torch")
    from learning.store import EpisodeStore

    lag, phase = 25_000_000, 3_700_000
    for name, eps in (("pick_a", (12, 9)), ("pick_b", (12, 10)), ("place", (10, 12))):
        write_bag(tmp_path / name, "mcap", episodes=eps, compressed=True, image_lag_ns=lag, joint_phase_ns=phase)
    out = tmp_path / "logs.zarr"
    r = vmerpo(tmp_path / "pick_a", tmp_path / "pick_b", "--out", out, *BAG_ARGS, "--task-id", 3)
    assert r.returncode == 0, r.stderr
    assert "the commands' range over the 2 bags" in r.stderr
    r = vmerpo(tmp_path / "place", "--out", out, *BAG_ARGS, "--task-id", 4, "--task-name", "place", "--append")
    assert r.returncode == 0, r.stderr
    s = EpisodeStore.open(out)
    assert list(s.episode_task) == [3, 3, 3, 3, 4, 4] and s.spec.task_ids("train") == [3, 4]
    assert np.allclose(s.spec.action_high, [0.21, 0.0], atol=1e-5)  # pick_b's 22nd frame, not pick_a's 0.20
    ep = s.episode(0)
    capture = np.round((ep["timestamp"] - T0 * 1e-9) * 1e9).astype(np.int64)
    grid = np.arange(-50_000_000 + phase, capture.max() + 1, 10_000_000)
    assert np.allclose(ep["state"][:, 0], [grid[grid <= c].max() * 1e-9 for c in capture], atol=1e-6)

    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "vmerpo", "train", "--data", str(out), "--config", "tiny",
                        "--out", str(run), "--no-progress", "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["tasks"] == [3, 4]
    assert json.loads((run / "config.json").read_text())["meta_train_tasks"] == [3, 4]
    import torch

    ckpt = torch.load(run / "checkpoints" / "merpo.pt", weights_only=True)
    assert sorted(ckpt["learners"]) == ["3", "4"] and ckpt["step"] > 0  # a RAC learner per task, meta-steps done


def test_a_bag_recorded_again_at_the_same_path_is_imported_whole(tmp_path):
    """Skipping the episodes already imported from a bag (a rerun continues a batch) goes by
    the recording, not by the path only: a new recording made at the same path (after the
    first was moved away) is imported whole, and rerunning it then skips it."""
    from learning.store import EpisodeStore

    bag, out = tmp_path / "take", tmp_path / "logs.zarr"
    write_bag(bag, "mcap")
    assert vmerpo(bag, "--out", out, *BAG_ARGS).returncode == 0
    bag.rename(tmp_path / "take_monday")
    write_bag(bag, "mcap", episodes=(5, 9, 7), t0=T0 + 86_400 * 10**9)  # the next day, same path
    r = vmerpo(bag, "--out", out, *BAG_ARGS, "--append", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["episodes_imported"] == 3 and "another recording" in r.stderr, r.stderr
    s = EpisodeStore.open(out)
    assert list(s.provenance("bag_episode")) == [0, 1, 0, 1, 2] and len(set(s.provenance("bag_start_ns"))) == 2
    assert list(s.episode_lengths) == [12, 9, 5, 9, 7]
    r = vmerpo(bag, "--out", out, *BAG_ARGS, "--append", "--json")  # the same recording again: skipped
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["episodes_already_in_store"] == 3 and EpisodeStore.open(out).n_episodes == 5


def test_a_simulator_clock_reset_in_a_bag_starts_an_episode_and_never_pairs_across_it(tmp_path):
    """Header stamps restart at a simulator reset while the bag's log time runs on: the takes
    before and after are two episodes, and every row's state is its own take's (by stamp
    alone, the second take's states, stamped like the first's, were paired with the first
    take's frames and the takes merged into one episode). The camera's clock resets 20 ms
    before the joints' is logged (its first frame still pairs with its own take's state)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from learning.store import EpisodeStore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types

    def header(ns):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                        frame_id="c")

    msgs = []
    for take in range(2):
        for k in range(40):
            log = T0 + take * 2 * 10**9 + k * CAM_DT  # log time runs on (0.7 s pause between takes)
            sim = 10**9 + k * CAM_DT  # the simulator's clock restarts at each take
            for j in range(3):  # joint states stamped 8, 5 and 2 ms before the frame, logged 20 ms later
                msgs.append((log + 20_000_000 - 8_000_000 + j * 3_000_000, "/joint_states", "sensor_msgs/msg/JointState",
                             T["sensor_msgs/msg/JointState"](header=header(sim - 8_000_000 + j * 3_000_000), name=["a"],
                                                             position=np.array([take + k / 100]),
                                                             velocity=np.zeros(0), effort=np.zeros(0))))
            msgs.append((log, "/cam/image", "sensor_msgs/msg/Image", T["sensor_msgs/msg/Image"](
                header=header(sim), height=8, width=8, encoding="rgb8", is_bigendian=0, step=24,
                data=np.full(192, k, np.uint8))))
            msgs.append((log + 25_000_000, "/cmd", "std_msgs/msg/Float64MultiArray", T["std_msgs/msg/Float64MultiArray"](
                layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.array([take + k / 100]))))
            msgs.append((log + 26_000_000, "/reward", "std_msgs/msg/Float64", T["std_msgs/msg/Float64"](data=1.0)))
    msgs.sort(key=lambda m: m[0])
    bag = tmp_path / "sim"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for t, topic, typ, msg in msgs:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=ts)
            w.write(conns[topic], t, ts.serialize_cdr(msg, typ))
    out = tmp_path / "logs.zarr"
    r = vmerpo(bag, "--out", out, *BAG_ARGS, "--image-size", 8)
    assert r.returncode == 0, r.stderr
    s = EpisodeStore.open(out)
    assert list(s.episode_lengths) == [40, 40]
    for e in range(2):
        ep = s.episode(e)
        np.testing.assert_allclose(ep["state"][:, 0], e + np.arange(40) / 100, atol=1e-6)
        np.testing.assert_allclose(ep["action"][:, 0], ep["state"][:, 0], atol=1e-6)
