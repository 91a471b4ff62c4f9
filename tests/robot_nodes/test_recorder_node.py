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


def _publish_tick(node, pubs, i: int, stamp_ns: int, command: bool = True) -> None:
    """A robot tick: joint state, image (value i), then the command answering the frame."""
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64, Float64MultiArray

    from robot_nodes.conversions import array_to_image, fill_float64_array, ns_to_stamp

    js = JointState(name=list(META_STATE), position=[float(i)] * len(META_STATE))
    ns_to_stamp(stamp_ns, js.header.stamp)
    pubs["joint_states"].publish(js)
    img = Image()
    ns_to_stamp(stamp_ns, img.header.stamp)
    array_to_image(np.full((48, 80, 3), i % 256, np.uint8), img, "bgr8")
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
    # The next writer drops the killed episode's uncommitted rows and keeps episode 0.
    from learning.store import EpisodeWriter

    with EpisodeWriter(store, mode="a", log=lambda m: None) as w:
        assert w.n_episodes == 1 and w.n_frames == 12
