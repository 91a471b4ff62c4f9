"""policy_node under a robot's bad day, in-process over real DDS: inference failures on live
frames, frozen / backwards / future camera stamps, and compressed camera topics. Every test
asserts the process holds no IP socket (policy_setup)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.robot_nodes.test_policy_node import enable, image_msg, policy_setup
from tests.rosutil import wait_for

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")


@pytest.fixture(scope="module")
def failing_policy(ee_policy, tmp_path_factory):
    """The ee_delta policy, but onnxruntime fails on all-white frames."""
    from robot_nodes.testing import make_failing_policy

    return make_failing_policy(ee_policy, tmp_path_factory.mktemp("faulty") / "fails_on_white.onnx")


def diag(msg) -> tuple[int, str, dict[str, str]]:
    st = msg.status[0]
    return int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level), st.message, \
        {kv.key: kv.value for kv in st.values}


def test_inference_failures_are_contained_then_the_node_disables_itself(failing_policy):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    with policy_setup(failing_policy, obs_timeout_s=30.0, max_consecutive_failures=4, failures_for_error=2,
                      diagnostics_period_s=0.2) as (node, client, pubs, rec):
        diags: list = []
        client.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 100)
        assert enable(client).success
        pubs["image"].publish(image_msg(client))
        assert wait_for(lambda: node.ticks == 1 and len(rec) >= 1, 10)
        # one failure: a hold (zeros), counted, WARN; the next good frame is acted upon again
        n0 = len(rec)
        pubs["image"].publish(image_msg(client, value=255))
        assert wait_for(lambda: node.failures == 1 and len(rec) > n0, 10)
        assert not any(rec[n0][1].data) and node.enabled and node.consecutive_failures == 1
        assert "onnxruntime failed" in node.last_failure
        pubs["image"].publish(image_msg(client))
        assert wait_for(lambda: node.ticks == 2, 10)
        assert node.consecutive_failures == 0
        # failures in a row: ERROR from the 2nd, disabled after the 4th, still alive
        for _ in range(4):
            pubs["image"].publish(image_msg(client, value=255))
            time.sleep(0.05)
        assert wait_for(lambda: not node.enabled and node.failures == 5, 10), (node.failures, node.enabled)
        assert "max_consecutive_failures=4" in node.disabled_because
        assert wait_for(lambda: any(diag(d)[0] == int.from_bytes(DiagnosticStatus.ERROR, "little")
                                    and "disabled itself" in diag(d)[1] for d in diags), 10)
        assert node.holds >= 5  # a hold per failed frame (and the watchdog's while no frame is valid)
        # disabled: frames get no command; enabled again: commands flow
        n1 = len(rec)
        pubs["image"].publish(image_msg(client))
        holds = node.holds
        time.sleep(0.3)
        assert len(rec) == n1 and node.ticks == 2 and node.holds == holds  # silent: no commands at all
        assert enable(client).success and not node.disabled_because
        pubs["image"].publish(image_msg(client))
        assert wait_for(lambda: node.ticks == 3, 10)
        assert all(np.all(np.isfinite(m.data)) for _, m in rec)


def test_frozen_stamps_get_inference_and_backwards_stamps_are_rejected(ee_policy):
    from robot_nodes.conversions import stamp_to_ns

    with policy_setup(ee_policy, obs_timeout_s=30.0) as (node, client, pubs, rec):
        assert enable(client).success
        a = image_msg(client)
        pubs["image"].publish(a)
        assert wait_for(lambda: node.runtime.steps == 1, 10)
        b = image_msg(client, value=7)  # new pixels under the same (frozen) stamp
        b.header.stamp = a.header.stamp
        pubs["image"].publish(b)
        assert wait_for(lambda: node.runtime.steps == 2 and len(rec) >= 2, 10)
        assert node.frozen_stamps == 1
        n0 = len(rec)
        pubs["image"].publish(b)  # the very same frame again: answered, not stepped
        assert wait_for(lambda: len(rec) > n0, 10)
        time.sleep(0.1)
        assert node.runtime.steps == 2 and list(rec[-1][1].data) == list(rec[n0 - 1][1].data)
        older = image_msg(client, value=9)
        ns = stamp_to_ns(a.header.stamp) - 1_000_000_000
        older.header.stamp.sec, older.header.stamp.nanosec = divmod(ns, 1_000_000_000)
        pubs["image"].publish(older)
        assert wait_for(lambda: node.backwards_stamps == 1 and node.rejected == 1, 10)
        assert node.runtime.steps == 2


def test_future_stamps_are_rejected_when_clocks_are_synchronised(ee_policy):
    with policy_setup(ee_policy, obs_timeout_s=30.0, max_frame_age_s=5.0) as (node, client, pubs, rec):
        assert enable(client).success
        future = image_msg(client)
        future.header.stamp.sec += 10
        pubs["image"].publish(future)
        assert wait_for(lambda: node.future_stamps == 1 and node.rejected == 1, 10)
        assert node.runtime.steps == 0 and all(not any(m.data) for _, m in rec)
        pubs["image"].publish(image_msg(client))  # a correct stamp after it: acted upon
        assert wait_for(lambda: node.runtime.steps == 1, 10)


def _actions(policy, frames, transport, codec=None):
    """Commands for `frames` (uint8 RGB arrays) sent on the raw or the compressed topic."""
    from sensor_msgs.msg import CompressedImage, Image

    from robot_nodes.conversions import array_to_compressed_image, array_to_image

    with policy_setup(policy, obs_timeout_s=30.0, image_transport=transport) as (node, client, pubs, rec):
        pub = pubs["image"]  # image/compressed for the compressed transport
        assert enable(client).success
        for i, frame in enumerate(frames):
            msg = CompressedImage() if transport == "compressed" else Image()
            if transport == "compressed":
                array_to_compressed_image(frame, msg, codec)
            else:
                array_to_image(frame, msg)
            msg.header.stamp = client.get_clock().now().to_msg()
            pub.publish(msg)
            assert wait_for(lambda i=i: node.ticks == i + 1, 10), (i, node.rejected, node.last_failure)
        time.sleep(0.1)
        return np.array([m.data for _, m in rec if any(m.data)])


def test_a_compressed_topic_gives_the_raw_topic_actions(ee_policy):
    rng = np.random.default_rng(3)
    # smooth frames (a camera's, not noise): JPEG keeps them close
    base = np.linspace(0, 255, 120 * 160 * 3).reshape(120, 160, 3)
    frames = [np.clip(base * (0.6 + 0.1 * i) + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
              for i in range(4)]
    raw = _actions(ee_policy, frames, "raw")
    png = _actions(ee_policy, frames, "compressed", "png")
    jpeg = _actions(ee_policy, frames, "compressed", "jpeg")
    assert raw.shape == (4, 4) and png.shape == raw.shape and jpeg.shape == raw.shape
    np.testing.assert_allclose(png, raw, atol=1e-6)  # lossless: the same pixels, the same actions
    np.testing.assert_allclose(jpeg, raw, atol=0.05)  # up to the codec
