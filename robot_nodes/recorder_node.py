"""`recorder_node`: ROS topics -> episodes in the zarr store (contracts 1 and 3).

Subscribes `image`, `joint_states`, `command` (Float64MultiArray or TwistStamped, by
parameter) and, when present, `reward` (std_msgs/Float64) and `success` (std_msgs/Bool).
`~/start_episode` (std_srvs/Trigger) opens an episode, `~/end_episode` (std_srvs/SetBool:
the success flag) commits it. Rows are streamed into the store as they are complete
(`EpisodeWriter.stream_episode`), so a recorder killed mid-episode loses only that episode.

Alignment (contract 1): ticks follow the camera, thinned to `control_hz` by the image stamps;
a tick's state is the newest joint state stamped at or before the image; its action is the
first command received after the image arrived (or, when the command names the frame it
answers, as policy_node's do, exactly that frame's); its reward is what the `reward` topic
reports for the transition that action caused (reward_source: topic), or 1 on the last row
of a successful episode (reward_source: sparse-success). Images go through the one
preprocessing function (`to_model_image`).
"""

from __future__ import annotations

from robot_nodes.netsafe import ensure_safe_before_rclpy

ensure_safe_before_rclpy()

import time  # noqa: E402
from collections import deque  # noqa: E402

import numpy as np  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64, Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from learning.store import EpisodeStream, EpisodeWriter, StoreSpec  # noqa: E402
from perception.preprocess import preprocess_spec, to_model_image  # noqa: E402
from robot_nodes.common import declare, run_node  # noqa: E402
from robot_nodes.conversions import (  # noqa: E402
    MessageError,
    frame_stamp_of,
    image_to_array,
    joint_values,
    stamp_to_ns,
)

REWARD_SOURCES = ("topic", "sparse-success")


class RecorderNode(Node):
    def __init__(self, node_name: str = "recorder_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        A = Parameter.Type
        d = lambda *a: declare(self, *a)  # noqa: E731
        self.store_path = d("store", "", "path or URL of the zarr episode store (appended to)")
        self.task_id = d("task_id", 0, "task id of recorded episodes")
        self.task_name = d("task_name", "", "task name for the store's task table")
        robot = d("robot", "robot", "robot name for the store attrs")
        self.control_hz = d("control_hz", 0.0, "tick rate; 0: every camera frame is a tick")
        self.image_size = d("image_size", 64, "model image side written to the store")
        self.crop = d("crop", "center", "crop of the one preprocessing function")
        self.state_names = d("state_names", A.STRING_ARRAY, "joint_states entries forming data/state")
        self.action_names = d("action_names", A.STRING_ARRAY, "command channels forming data/action")
        low = d("action_low", A.DOUBLE_ARRAY, "action limits (store attrs)")
        high = d("action_high", A.DOUBLE_ARRAY, "action limits (store attrs)")
        action_type = d("action_type", "ee_delta", "ee_delta | twist | joint_position | joint_velocity")
        self.command_type = d("command_type", "float64_array", "float64_array | twist_stamped")
        self.reward_source = d("reward_source", "topic", "topic | sparse-success")
        self.behavior = d("behavior", "ros", "provenance: what produced the commands")
        self.max_pending = d("max_pending_ticks", 30, "ticks kept waiting for their command")

        if not self.store_path:
            raise ValueError("parameter `store` (path of the zarr store) is not set")
        if not self.state_names or not self.action_names:
            raise ValueError("parameters `state_names` and `action_names` must be set")
        if self.reward_source not in REWARD_SOURCES:
            raise ValueError(f"reward_source {self.reward_source!r} not one of {REWARD_SOURCES}")
        n = len(self.action_names)
        low = low if low is not None else [-1.0] * n
        high = high if high is not None else [1.0] * n
        reward = ({"type": "topic", "topic": self.resolve_topic_name("reward")}
                  if self.reward_source == "topic" else
                  {"type": "sparse-success", "detail": "1 on the last row of a successful episode"})
        spec = StoreSpec(
            robot=robot, control_hz=float(self.control_hz) or 30.0, image_size=int(self.image_size),
            state_names=self.state_names, action_names=self.action_names,
            action_low=list(low), action_high=list(high), action_type=action_type,
            camera={"topic": self.resolve_topic_name("image"), "crop": self.crop, "encoding": "rgb8",
                    "intrinsics": None, "preprocess": preprocess_spec(int(self.image_size), self.crop)},
            reward_source=reward,
            tasks=[{"id": int(self.task_id), "name": self.task_name or f"task {self.task_id}",
                    "params": {}, "split": "train"}],
            env={"source": "ros recorder_node"},
        )
        self.writer = EpisodeWriter(self.store_path, spec, mode="a",
                                    log=lambda m: self.get_logger().warning(m))
        self.stream: EpisodeStream | None = None
        self.ticks: deque[dict] = deque()
        self.joints: deque[tuple[int, JointState]] = deque(maxlen=200)
        self.last_tick_ns: int | None = None
        self.rejected = 0
        self.dropped = 0
        self.rows = 0

        reliable = QoSProfile(depth=100)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, qos_profile_sensor_data)
        self.create_subscription(Image, "image", self._on_image, QoSProfile(
            depth=30, reliability=qos_profile_sensor_data.reliability))
        cmd_type = TwistStamped if self.command_type == "twist_stamped" else Float64MultiArray
        self.create_subscription(cmd_type, "command", self._on_command, reliable)
        self.create_subscription(Float64, "reward", self._on_reward, reliable)
        self.create_subscription(Bool, "success", self._on_success, reliable)
        self.create_service(Trigger, "~/start_episode", self._on_start)
        self.create_service(SetBool, "~/end_episode", self._on_end)
        self.get_logger().info(f"recording into {self.store_path} ({self.writer.n_episodes} episodes "
                               f"committed); call ~/start_episode")

    # -- episodes ----------------------------------------------------------------------------
    def _on_start(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        if self.stream is not None:
            self.stream.discard()
            self.get_logger().warning("start_episode during an episode: the open episode was discarded")
        self.stream = self.writer.stream_episode(
            int(self.task_id), {"behavior": self.behavior, "source": "recorder_node"})
        self.ticks.clear()
        self.last_tick_ns = None
        self.rows = 0
        self.success_seen = False
        res.success, res.message = True, f"recording episode {self.writer.n_episodes}"
        return res

    def _on_end(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        if self.stream is None:
            res.success, res.message = False, "no episode open: call ~/start_episode first"
            return res
        ready = [t for t in self.ticks if t["action"] is not None]
        self.dropped += len(self.ticks) - len(ready)
        if ready and self.reward_source == "sparse-success":
            ready[-1]["reward"] = 1.0 if req.data else 0.0
        for t in ready:
            self._write(t)
        self.ticks.clear()
        if self.rows == 0:
            self.stream.discard()
            self.stream = None
            res.success, res.message = False, "episode had no complete row (image + state + command); discarded"
            return res
        index = self.stream.commit(bool(req.data))
        self.stream = None
        res.success, res.message = True, f"episode {index} committed: {self.rows} rows, success={bool(req.data)}"
        self.get_logger().info(res.message)
        return res

    def _write(self, tick: dict) -> None:
        assert self.stream is not None  # rows are written only while an episode is open
        self.stream.append({"image": tick["image"], "state": tick["state"], "action": tick["action"],
                            "reward": np.float32(tick["reward"] or 0.0), "terminal": False,
                            "timestamp": tick["stamp"] * 1e-9})
        self.rows += 1

    def _finalize(self) -> None:
        """Write every tick that has its action and a successor (its transition is over)."""
        while len(self.ticks) >= 2:
            if self.ticks[0]["action"] is not None:
                self._write(self.ticks.popleft())
            elif any(t["action"] is not None for t in self.ticks):
                self.ticks.popleft()  # skipped by a policy answering a later frame: no action
                self.dropped += 1
            else:
                break
        while len(self.ticks) > int(self.max_pending):  # never answered: not a valid row
            self.ticks.popleft()
            self.dropped += 1

    # -- topics --------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        self.joints.append((stamp_to_ns(msg.header.stamp), msg))

    def _on_image(self, msg: Image) -> None:
        if self.stream is None:
            return
        stamp = stamp_to_ns(msg.header.stamp)
        if self.control_hz and self.last_tick_ns is not None:
            if stamp - self.last_tick_ns < 0.75e9 / float(self.control_hz):
                return  # thinned to the control rate (25 % tolerance for jitter)
        joint = next((m for s, m in reversed(self.joints) if s <= stamp), None)
        try:
            if joint is None:
                raise MessageError("no joint state at or before the image stamp")
            state = joint_values(joint, self.state_names).astype(np.float32)
            raw, encoding = image_to_array(msg)
            image = to_model_image(raw, int(self.image_size), encoding, crop=self.crop)
        except ValueError as e:
            self.rejected += 1
            self.get_logger().warning(f"frame not recorded: {e}", throttle_duration_sec=2.0)
            return
        self.last_tick_ns = stamp
        self.ticks.append({"stamp": stamp, "received": time.monotonic(), "image": image,
                           "state": state, "action": None, "reward": None})
        self._finalize()

    def _on_command(self, msg) -> None:
        if self.stream is None:
            return
        if isinstance(msg, TwistStamped):
            t = msg.twist
            values = [t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z]
            frame = None
        else:
            values, frame = list(msg.data), frame_stamp_of(msg)
        action = np.asarray(values[: len(self.action_names)], dtype=np.float32)
        if action.size != len(self.action_names) or not np.all(np.isfinite(action)):
            self.rejected += 1
            return
        now = time.monotonic()
        for tick in self.ticks:
            if tick["action"] is not None:
                continue
            if frame is not None and frame != 0:
                if tick["stamp"] == frame:
                    tick["action"] = action
            elif tick["received"] <= now:
                tick["action"] = action
        self._finalize()

    def _on_reward(self, msg: Float64) -> None:
        # The transition of the newest tick whose action has been issued.
        if self.reward_source != "topic":
            return
        for tick in reversed(self.ticks):
            if tick["action"] is not None:
                tick["reward"] = (tick["reward"] or 0.0) + float(msg.data)
                return

    def _on_success(self, msg: Bool) -> None:
        if self.stream is not None and msg.data:
            self.success_seen = True

    def on_process_exit(self) -> None:
        if self.stream is not None:
            self.get_logger().warning("shutting down mid-episode: the open episode is not committed")
        self.writer.close()


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
