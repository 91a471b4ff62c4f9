"""Message conversions: every malformed message is a one-line MessageError; the ee_delta ->
twist mapping is the documented one."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs")

from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from robot_nodes.conversions import (  # noqa: E402
    MessageError,
    action_to_twist,
    array_to_image,
    fill_float64_array,
    frame_stamp_of,
    image_to_array,
    joint_values,
)


def _img(h=4, w=6, enc="rgb8"):
    m = Image()
    ch = 1 if enc == "mono8" else 3
    arr = np.arange(h * w * ch, dtype=np.uint8).reshape((h, w) if ch == 1 else (h, w, ch))
    array_to_image(arr, m, enc)
    return m, arr


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "mono8"])
def test_image_round_trip(enc):
    m, arr = _img(enc=enc)
    out, e = image_to_array(m)
    assert e == enc and np.array_equal(out, arr)


def test_row_padding_is_skipped():
    m, arr = _img()
    padded = np.zeros((4, 20), np.uint8)
    padded[:, :18] = arr.reshape(4, 18)
    m.step, m.data = 20, padded.tobytes()
    assert np.array_equal(image_to_array(m)[0], arr)


@pytest.mark.parametrize("change, match", [
    ({"encoding": "32FC1"}, "encoding"),
    ({"step": 5}, "step"),
    ({"data": bytes(10)}, "bytes"),
    ({"height": 0, "width": 0, "step": 0, "data": b""}, "zero size"),
    ({"height": 100_000, "width": 100_000}, "max_image_pixels"),
])
def test_malformed_images_are_rejected(change, match):
    m, _ = _img()
    for k, v in change.items():
        setattr(m, k, v)
    with pytest.raises(MessageError, match=match):
        image_to_array(m)


def test_joint_values_order_missing_and_nan():
    js = JointState(name=["b", "a"], position=[2.0, 1.0])
    assert list(joint_values(js, ["a", "b"])) == [1.0, 2.0]
    with pytest.raises(MessageError, match="lacks c"):
        joint_values(js, ["c"])
    with pytest.raises(MessageError, match="non-finite"):
        joint_values(JointState(name=["a"], position=[float("nan")]), ["a"])
    with pytest.raises(MessageError, match="names"):
        joint_values(JointState(name=["a", "b"], position=[1.0]), ["a"])


def test_frame_stamp_label_round_trip():
    m = Float64MultiArray()
    fill_float64_array(m, np.array([0.5, -1.0]), 123456789)
    assert list(m.data) == [0.5, -1.0] and frame_stamp_of(m) == 123456789
    fill_float64_array(m, [0.0])
    assert frame_stamp_of(m) is None


def test_ee_delta_to_twist_is_metres_per_step_times_rate():
    # Meta-World: one action unit = 1 cm per 12.5 ms step -> 0.8 m/s; the gripper is dropped.
    lin, ang = action_to_twist(np.array([1.0, -0.5, 0.25, 1.0]), "ee_delta", 80.0, 0.01)
    assert np.allclose(lin, [0.8, -0.4, 0.2]) and ang == [0.0, 0.0, 0.0]
    lin, ang = action_to_twist(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), "twist", 30.0, 0.01)
    assert lin == [0.1, 0.2, 0.3] and np.allclose(ang, [0.4, 0.5, 0.6])
    with pytest.raises(ValueError, match="joint_position"):
        action_to_twist(np.zeros(2), "joint_position", 30.0, 0.01)


def test_compressed_images_decode_like_the_raw_ones_and_bad_ones_are_one_line_errors():
    from sensor_msgs.msg import CompressedImage

    from robot_nodes.conversions import array_to_compressed_image, compressed_image_to_array

    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    msg = CompressedImage()
    array_to_compressed_image(rgb, msg, "png")
    arr, enc = compressed_image_to_array(msg)
    assert enc == "bgr8" and np.array_equal(arr[:, :, ::-1], rgb)  # lossless, BGR order as OpenCV decodes
    array_to_compressed_image(rgb[:, :, 0], msg, "png")
    assert compressed_image_to_array(msg)[1] == "mono8"
    array_to_compressed_image(rgb, msg, "jpeg")
    assert msg.format == "rgb8; jpeg compressed bgr8" and compressed_image_to_array(msg)[0].shape == (30, 40, 3)
    with pytest.raises(MessageError, match="exceeds max_image_pixels"):  # refused from the header alone
        compressed_image_to_array(msg, max_pixels=100)
    for data, match in ((b"", "no data"), (b"not an image at all", "neither JPEG nor PNG"),
                        (bytes(msg.data)[:40], "no frame header|does not decode"),
                        (bytes(msg.data)[:400], "does not decode")):
        msg.data = data
        with pytest.raises(MessageError, match=match) as e:
            compressed_image_to_array(msg)
        assert "\n" not in str(e.value)
