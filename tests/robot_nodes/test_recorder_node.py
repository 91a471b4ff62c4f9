"""recorder_node in its own process: alignment as contract 1 says, and a SIGKILL mid-episode
leaves a store that opens with every committed episode intact."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from robot_nodes.netsafe import assert_no_inet_sockets
from tests.robot_nodes.conftest import META_STATE, call
from tests.rosutil import ros_context, wait_for

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")


def _publish_tick(node, pubs, i: int, stamp_ns: int, command: bool = True, noise: bool = False) -> None:
    """A robot tick: joint state, image (value i), then the command answering the frame."""
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64, Float64MultiArray

    from robot_nodes.conversions import array_to_image, fill_float64_array, ns_to_stamp

    js = JointState(name=list(META_STATE), position=[float(i)] * len(META_STATE))
    ns_to_stamp(stamp_ns, js.header.stamp)
    pubs["joint_states"].publish(js)
    img = Image()
    ns_to_stamp(stamp_ns, img.header.stamp)
    pixels = (np.random.default_rng(i).integers(0, 256, (48, 80, 3), dtype=np.uint8) if noise
              else np.full((48, 80, 3), i % 256, np.uint8))  # noise: incompressible, fills a disk
    array_to_image(pixels, img, "bgr8")
    pubs["image"].publish(img)
    time.sleep(0.01)
    if command:
        cmd = Float64MultiArray()
        fill_float64_array(cmd, [i / 1000.0] * 4, stamp_ns)
        pubs["command"].publish(cmd)
        time.sleep(0.005)
        pubs["reward"].publish(Float64(data=float(i)))
    time.sleep(0.01)


def test_recorder_aligns_and_survives_sigkill(tmp_path, node_process):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64, Float64MultiArray
    from std_srvs.srv import SetBool, Trigger

    from learning.store import EpisodeStore

    store = tmp_path / "rec.zarr"
    rec = node_process("robot_nodes.recorder_node", "--params-file", "config/recorder_node.yaml",
                       "-p", f"store:={store}", "-p", "task_id:=7")
    with ros_context("rec_driver") as (_, _, (node,)):
        pubs = {
            "image": node.create_publisher(Image, "image", qos_profile_sensor_data),
            "joint_states": node.create_publisher(JointState, "joint_states", qos_profile_sensor_data),
            "command": node.create_publisher(Float64MultiArray, "command", 10),
            "reward": node.create_publisher(Float64, "reward", 10),
        }
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30), rec.output()
        assert call(node, Trigger, "recorder_node/start_episode", timeout=20).success
        t0 = 1_700_000_000_000_000_000
        for i in range(12):
            _publish_tick(node, pubs, i, t0 + i * 50_000_000)
        res = call(node, SetBool, "recorder_node/end_episode", SetBool.Request(data=True))
        assert res.success, res.message
        # Second episode: 150 ticks (beyond a zarr chunk, so rows reach disk), then SIGKILL.
        assert call(node, Trigger, "recorder_node/start_episode").success
        for i in range(150):
            _publish_tick(node, pubs, 100 + i, t0 + 10**10 + i * 50_000_000)
        time.sleep(0.3)
        assert rec.alive(), rec.output()
        rec.stop(signal.SIGKILL)
        assert_no_inet_sockets()

    s = EpisodeStore.open(store)
    assert s.n_episodes == 1
    data = s.episode(0)
    n = len(data["action"])
    # Row t pairs frame t (image value t, state t) with the command answering it and the
    # reward of that transition; every tick was answered before end_episode.
    assert n == 12, n
    idx = np.arange(n)
    assert data["image"].shape == (n, 64, 64, 3)
    assert np.all(data["image"][:, 0, 0, 0] == idx)
    assert np.allclose(data["state"][:, 0], idx)
    assert np.allclose(data["action"][:, 0], idx / 1000.0)
    assert np.allclose(data["reward"], idx)
    assert np.allclose(np.diff(data["timestamp"]), 0.05)
    assert s.episode_task[0] == 7 and bool(s.episode_success[0])
    assert list(s.provenance("rows_log_time")) == [0]  # every message had its header stamp
    # The next writer drops the killed episode's uncommitted rows and keeps episode 0.
    from learning.store import EpisodeWriter

    with EpisodeWriter(store, mode="a", log=lambda m: None) as w:
        assert w.n_episodes == 1 and w.n_frames == 12


def _publishers(node):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64, Float64MultiArray

    return {"image": node.create_publisher(Image, "image", qos_profile_sensor_data),
            "joint_states": node.create_publisher(JointState, "joint_states", qos_profile_sensor_data),
            "command": node.create_publisher(Float64MultiArray, "command", 10),
            "reward": node.create_publisher(Float64, "reward", 10)}


def _record(node, pubs, rec, first: int, n: int, end: bool | None = True, **kw) -> None:
    """One take of n ticks (values first..first+n-1); end_episode(success=end) unless end is None."""
    from std_srvs.srv import SetBool, Trigger

    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30), rec.output()
    res = call(node, Trigger, "recorder_node/start_episode", timeout=20)
    assert res.success, res.message
    t0 = 1_700_000_000_000_000_000 + first * 50_000_000
    for i in range(n):
        _publish_tick(node, pubs, first + i, t0 + i * 50_000_000, **kw)
    if end is not None:
        res = call(node, SetBool, "recorder_node/end_episode", SetBool.Request(data=end))
        assert res.success, res.message


def test_sigint_and_sigterm_mid_take_commit_it_as_interrupted(tmp_path, node_process):
    """A stopped recorder keeps the take in progress (success unknown, how it ended in the
    provenance) and leaves every committed episode as it was."""
    from learning.store import EpisodeStore

    store = tmp_path / "rec.zarr"
    with ros_context("rec_driver") as (_, _, (node,)):
        pubs = _publishers(node)
        for k, sig in enumerate((signal.SIGTERM, signal.SIGINT)):
            rec = node_process("robot_nodes.recorder_node", "--params-file", "config/recorder_node.yaml",
                               "-p", f"store:={store}", "-p", "task_id:=3", name=f"rec{k}")
            _record(node, pubs, rec, 100 * k, 5, end=True)
            _record(node, pubs, rec, 100 * k + 50, 8, end=None)
            time.sleep(0.3)  # the last tick's command is in
            assert rec.stop(sig) == 0, rec.output()
            assert_no_inet_sockets()
    s = EpisodeStore.open(store)
    assert s.n_episodes == 4
    ended = [s.provenance("ended_by")[i] for i in range(4)]
    assert ended == ["end_episode", "SIGTERM", "end_episode", "SIGINT"], ended
    assert list(s.provenance("success_known")) == [True, False, True, False]
    assert list(s.episode_success) == [True, False, True, False]
    for i, first in enumerate((0, 50, 100, 150)):
        data = s.episode(i)
        assert np.allclose(data["state"][:, 0], first + np.arange(len(data["state"])))
    assert [len(s.episode(i)["action"]) for i in range(4)] == [5, 8, 5, 8]


def test_a_second_task_recorded_into_the_store_extends_its_task_table(tmp_path, node_process):
    """recorder_node with another task_id (and split) on an existing store adds the task to the
    table; the store stays readable and both takes keep their task ids."""
    from learning.store import EpisodeStore

    store = tmp_path / "rec.zarr"
    with ros_context("rec_driver") as (_, _, (node,)):
        pubs = _publishers(node)
        for k, (task, split) in enumerate(((3, "train"), (8, "test"))):
            rec = node_process("robot_nodes.recorder_node", "--params-file", "config/recorder_node.yaml",
                               "-p", f"store:={store}", "-p", f"task_id:={task}", "-p", f"split:={split}",
                               name=f"rec{k}")
            _record(node, pubs, rec, 100 * k, 4, end=True)
            assert rec.stop(signal.SIGINT) == 0, rec.output()
            assert_no_inet_sockets()
    assert "task 8 added to the store's task table (test)" in rec.output()
    s = EpisodeStore.open(store)
    assert list(s.episode_task) == [3, 8]
    assert s.spec.task_ids("train") == [3] and s.spec.task_ids("test") == [8]


def test_messages_without_a_header_stamp_pair_by_arrival_time_and_are_counted(tmp_path, node_process):
    """The alignment rule's fallback (learning/alignment.py), live: an image or joint state
    whose header stamp is zero counts at its arrival on the node's clock (a bag's log time),
    so an unstamped camera still records; the episode's `rows_log_time` says how many rows."""
    from std_msgs.msg import Float64, Float64MultiArray
    from std_srvs.srv import SetBool, Trigger

    from learning.store import EpisodeStore
    from robot_nodes.conversions import array_to_image, fill_float64_array

    store = tmp_path / "rec.zarr"
    rec = node_process("robot_nodes.recorder_node", "--params-file", "config/recorder_node.yaml",
                       "-p", f"store:={store}")
    with ros_context("rec_driver") as (_, _, (node,)):
        from sensor_msgs.msg import Image, JointState

        pubs = _publishers(node)
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30), rec.output()
        assert call(node, Trigger, "recorder_node/start_episode", timeout=20).success
        t_start = time.time()
        for i in range(6):
            pubs["joint_states"].publish(JointState(name=list(META_STATE), position=[float(i)] * len(META_STATE)))
            time.sleep(0.02)  # the joint state arrives first: it is the newest at the image's arrival
            img = Image()
            array_to_image(np.full((48, 80, 3), i, np.uint8), img, "bgr8")
            pubs["image"].publish(img)
            time.sleep(0.02)
            cmd = Float64MultiArray()
            fill_float64_array(cmd, [i / 1000.0] * 4)
            pubs["command"].publish(cmd)
            pubs["reward"].publish(Float64(data=float(i)))
            time.sleep(0.02)
        res = call(node, SetBool, "recorder_node/end_episode", SetBool.Request(data=True))
        assert res.success, res.message
        assert rec.stop(signal.SIGINT) == 0, rec.output()
    s = EpisodeStore.open(store)
    data = s.episode(0)
    assert len(data["action"]) == 6 and list(s.provenance("rows_log_time")) == [6]
    assert np.allclose(data["state"][:, 0], np.arange(6)) and np.allclose(data["action"][:, 0], np.arange(6) / 1000)
    ts = data["timestamp"]  # arrival times on the node's clock (system time here)
    assert np.all(np.diff(ts) > 0) and abs(ts[0] - t_start) < 30


@pytest.mark.slow  # ~67 s; `vmerpo bench faults --only stops` runs the same case
def test_a_full_disk_ends_the_take_keeps_the_node_and_every_committed_episode(tmp_path, node_process):
    """The store on a 6 MB disk, 3 MB of it taken by a filler file: a take of incompressible
    frames fills it. The node stays up, reports the error, refuses new takes while the disk
    is full, keeps the committed episode, and records again once the filler is deleted."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from std_srvs.srv import SetBool, Trigger

    from learning.store import EpisodeStore
    from robot_nodes.testing import small_disk_prefix

    disk = tmp_path / "disk"
    disk.mkdir()
    prefix = small_disk_prefix(disk, 6, 3)
    if prefix is None:
        pytest.skip("no mount namespace here (needs root and unshare): cannot give the node a small disk")
    store = disk / "rec.zarr"
    rec = node_process("robot_nodes.recorder_node", "--params-file", "config/recorder_node.yaml",
                       "-p", f"store:={store}", "-p", "diagnostics_period_s:=0.2", prefix=tuple(prefix))
    with ros_context("rec_driver") as (_, _, (node,)):
        diags: list = []
        node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
        pubs = _publishers(node)
        _record(node, pubs, rec, 0, 10, end=True, noise=True)
        view = lambda p: f"/proc/{rec.proc.pid}/root{p}"  # noqa: E731 - the node's mount namespace
        before = EpisodeStore.open(view(store)).episode(0)
        _record(node, pubs, rec, 1000, 300, end=None, noise=True)  # ~3.6 MB of frames: the disk fills
        assert wait_for(lambda: any(st.level == DiagnosticStatus.ERROR and "not writable" in st.message
                                    for d in diags for st in d.status), 10), rec.output()[-2000:]
        assert rec.alive(), rec.output()
        res = call(node, SetBool, "recorder_node/end_episode", SetBool.Request(data=True))
        assert not res.success  # the take is gone, and says so
        import os

        # dropping the failed take's rows would free space: another writer takes all of it first
        with open(view(disk / "filler2"), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        res = call(node, Trigger, "recorder_node/start_episode")
        assert not res.success and "not writable" in res.message, res.message
        for name in ("filler", "filler2"):
            os.unlink(view(disk / name))  # space is back
        _record(node, pubs, rec, 2000, 6, end=True, noise=True)
        s = EpisodeStore.open(view(store))
        assert s.n_episodes == 2 and [len(s.episode(i)["action"]) for i in range(2)] == [10, 6]
        after = s.episode(0)
        assert all(np.array_equal(before[k], after[k]) for k in before)
        assert "No space left on device" in rec.output()
    assert rec.stop() == 0, rec.output()
