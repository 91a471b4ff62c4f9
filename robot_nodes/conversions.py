"""Message <-> numpy conversions shared by the nodes (contract 3: standard messages only).

Every function that reads a message validates it first and raises `MessageError` with a
one-line reason, so a node can count the message as rejected and stay alive: a publisher
may send any encoding, `step`, `data` length or size, and NaN joint states.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Encodings a camera driver commonly publishes that `to_model_image` turns into RGB.
IMAGE_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
FRAME_STAMP_LABEL = "frame_stamp_ns="  # Float64MultiArray layout label: the frame acted on


class MessageError(ValueError):
    """A message that cannot be used (wrong encoding, size, step, data length, NaN...)."""


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int, stamp) -> None:
    stamp.sec, stamp.nanosec = divmod(int(ns), 1_000_000_000)


def image_to_array(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image -> (uint8 [H, W, C] view of the message data, encoding).

    Checks everything before touching the data: encoding, zero or huge size, `step` shorter
    than a row, `data` shorter or longer than step x height. Padding bytes at the end of
    each row (step > width x channels) are skipped.
    """
    encoding = str(msg.encoding).lower()
    if encoding not in IMAGE_CHANNELS:
        raise MessageError(f"image encoding {msg.encoding!r} not accepted; expected one of "
                           f"{', '.join(IMAGE_CHANNELS)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError(f"image has zero size ({h}x{w})")
    if h * w > max_pixels:
        raise MessageError(f"image of {h}x{w} exceeds max_image_pixels={max_pixels}")
    channels = IMAGE_CHANNELS[encoding]
    row = w * channels
    if step < row:
        raise MessageError(f"image step {step} is shorter than a row ({w} px x {channels} bytes)")
    n = len(msg.data)
    if n != step * h:
        raise MessageError(f"image data has {n} bytes, expected step x height = {step * h}")
    arr = np.frombuffer(msg.data, dtype=np.uint8).reshape(h, step)[:, :row]
    return (arr if channels == 1 else arr.reshape(h, w, channels)), encoding


def compressed_image_to_array(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """sensor_msgs/CompressedImage (JPEG or PNG, image_transport's `compressed` plugin) ->
    (uint8 [H, W, C] array, encoding), through the one decoder bag import uses. The size is
    checked from the header before anything is decoded."""
    from perception.preprocess import decode_compressed

    if len(msg.data) == 0:
        raise MessageError(f"compressed image ({msg.format!r}) has no data")
    try:
        return decode_compressed(np.frombuffer(msg.data, dtype=np.uint8), max_pixels)
    except ValueError as e:
        raise MessageError(f"compressed image ({str(msg.format)[:60]!r}): {e}") from None


def array_to_compressed_image(image: np.ndarray, msg, codec: str = "jpeg", encoding: str = "rgb8",
                              quality: int = 95) -> None:
    """Fill a sensor_msgs/CompressedImage as image_transport's compressed plugin does (BGR
    order inside the codec; `format` "<encoding>; <codec> compressed bgr8")."""
    import cv2

    image = np.ascontiguousarray(image, dtype=np.uint8)
    bgr = image if image.ndim == 2 or encoding == "bgr8" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {codec}")
    msg.format = f"{encoding}; {codec} compressed {'mono8' if image.ndim == 2 else 'bgr8'}"
    msg.data = buf.tobytes()


def array_to_image(image: np.ndarray, msg, encoding: str = "rgb8") -> None:
    """Fill a sensor_msgs/Image from a uint8 [H, W, 3] (or [H, W] for mono8) array."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(image.shape[1] * (1 if image.ndim == 2 else image.shape[2]))
    msg.data = image.tobytes()


def joint_values(msg, names: Sequence[str], field: str = "position") -> np.ndarray:
    """sensor_msgs/JointState -> float64 values of `names`, in that order.

    Raises MessageError if a name is missing, the arrays disagree in length, or a value is
    not finite (a NaN joint state must never reach the policy or become a hold target).
    """
    values = getattr(msg, field)
    msg_names = list(msg.name)
    if len(values) != len(msg_names):
        raise MessageError(f"joint_states has {len(msg_names)} names but {len(values)} {field} values")
    index = {n: i for i, n in enumerate(msg_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise MessageError(f"joint_states lacks {', '.join(missing)}")
    out = np.array([values[index[n]] for n in names], dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise MessageError(f"joint_states has a non-finite {field} value")
    return out


def fill_float64_array(msg, values: np.ndarray | Sequence[float],
                       frame_stamp_ns: int | None = None) -> None:
    """std_msgs/Float64MultiArray as ros2_control's forward_command_controller reads it
    (only `data`). The layout's label carries the stamp of the camera frame the action
    answers, so a lockstep simulator or a recorder can pair them; controllers ignore it."""
    from std_msgs.msg import MultiArrayDimension

    msg.data = [float(x) for x in values]
    label = "action" if frame_stamp_ns is None else f"{FRAME_STAMP_LABEL}{int(frame_stamp_ns)}"
    msg.layout.dim = [MultiArrayDimension(label=label, size=len(msg.data), stride=len(msg.data))]
    msg.layout.data_offset = 0


def frame_stamp_of(msg) -> int | None:
    """The frame stamp written by `fill_float64_array`, if any."""
    for dim in msg.layout.dim:
        if dim.label.startswith(FRAME_STAMP_LABEL):
            try:
                return int(dim.label[len(FRAME_STAMP_LABEL):])
            except ValueError:
                return None
    return None


def action_to_twist(action: np.ndarray, action_type: str, control_hz: float,
                    metres_per_unit: float, radians_per_unit: float = 1.0) -> tuple[list[float], list[float]]:
    """A policy action -> (linear [3] m/s, angular [3] rad/s) for MoveIt Servo.

    ee_delta: channels 0..2 are position deltas of `metres_per_unit` per control step
    (Meta-World: 0.01 m per 12.5 ms step), so velocity = delta x metres_per_unit x control_hz.
    The gripper channel has no place in a twist and is dropped (drive the gripper separately).
    twist: channels 0..2 linear, 3..5 angular (if present), already in m/s and rad/s.
    """
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if action_type == "ee_delta":
        if control_hz <= 0:
            raise ValueError("ee_delta -> twist needs the policy's control_hz")
        lin = a[:3] * metres_per_unit * control_hz
        ang = np.zeros(3)
        if a.size >= 6:  # orientation deltas, if the policy has them (before any gripper channel)
            ang = a[3:6] * radians_per_unit * control_hz
        return lin.tolist(), ang.tolist()
    if action_type == "twist":
        lin = np.zeros(3)
        ang = np.zeros(3)
        lin[: min(3, a.size)] = a[:3]
        if a.size > 3:
            ang[: min(3, a.size - 3)] = a[3:6]
        return lin.tolist(), ang.tolist()
    raise ValueError(f"a {action_type} action cannot be sent as a twist; use command_interface: float64_array")
