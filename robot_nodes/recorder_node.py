"""`recorder_node`: ROS topics -> episodes in the zarr store (contracts 1 and 3).

Subscribes `image`, `joint_states`, `command` (Float64MultiArray or TwistStamped, by
parameter) and, when present, `reward` (std_msgs/Float64) and `success` (std_msgs/Bool).
`~/start_episode` (std_srvs/Trigger) opens an episode, `~/end_episode` (std_srvs/SetBool:
the success flag) commits it, `~/interrupt_episode` (std_srvs/Trigger) commits it as
interrupted (success unknown). Rows are streamed into the store as they are complete
(`EpisodeWriter.stream_episode`) and commits are fsynced.

A take is never lost to a stop (docs/robustness.md): SIGINT or SIGTERM commits the open take
as interrupted; each episode's provenance says how it ended (`ended_by`: end_episode,
interrupt_episode, SIGINT, SIGTERM, shutdown) and whether its success flag is known
(`success_known`). Only SIGKILL (or a power cut) loses the take in progress, never a
committed one. A failed write (a full disk) ends the take with an error on the log and on
`/diagnostics`, keeps every committed episode and keeps the node alive; it refuses new takes
until the store is writable again.

`image_transport: compressed` records from `<image>/compressed` (sensor_msgs/CompressedImage,
JPEG or PNG) through the same preprocessing function.

Alignment (contract 1) is `learning.alignment`'s, the rule import-bag and policy_node follow:
ticks follow the camera, thinned to `control_hz` by the image stamps; a tick's state is the
newest joint state stamped at or before the image (a message without a header stamp counts
at its arrival on the node's clock, the live form of a bag's log time; the episode's
`rows_log_time` provenance counts such rows); its action is the first command received after
the image arrived (or, when the command names the frame it answers, as policy_node's do,
exactly that frame's); its reward is what the `reward` topic
reports for the transition that action caused (reward_source: topic), or 1 on the last row
of a successful episode (reward_source: sparse-success). Images go through the one
preprocessing function (`to_model_image`).
"""

from __future__ import annotations

from robot_nodes.netsafe import ensure_safe_before_rclpy

ensure_safe_before_rclpy()

import os  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402

import numpy as np  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64, Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from learning.alignment import StampedHistory, answers, is_tick, message_time  # noqa: E402
from learning.store import EpisodeStream, EpisodeWriter, StoreError, StoreSpec  # noqa: E402
from perception.preprocess import preprocess_spec, to_model_image  # noqa: E402
from robot_nodes.common import declare, run_node  # noqa: E402
from robot_nodes.conversions import (  # noqa: E402
    MessageError,
    compressed_image_to_array,
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
        self.split = d("split", "train", "the task's split in the store's task table: train (meta-training) or test")
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
        self.transport = d("image_transport", "raw",
                           "raw: sensor_msgs/Image on `image` | compressed: sensor_msgs/CompressedImage "
                           "(JPEG/PNG) on `image/compressed`")
        diag_period = d("diagnostics_period_s", 1.0, "period of /diagnostics")

        if not self.store_path:
            raise ValueError("parameter `store` (path of the zarr store) is not set")
        if not self.state_names or not self.action_names:
            raise ValueError("parameters `state_names` and `action_names` must be set")
        if self.reward_source not in REWARD_SOURCES:
            raise ValueError(f"reward_source {self.reward_source!r} not one of {REWARD_SOURCES}")
        if self.transport not in ("raw", "compressed"):
            raise ValueError(f"image_transport {self.transport!r} not one of ('raw', 'compressed')")
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
                    "params": {}, "split": self.split}],
            env={"source": "ros recorder_node"},
        )
        if self.split not in ("train", "test"):
            raise ValueError(f"split {self.split!r} not one of ('train', 'test')")
        self.writer = EpisodeWriter(self.store_path, spec, mode="a",
                                    log=lambda m: self.get_logger().warning(m))
        try:  # an existing store's table gains this task id (another task of the family)
            if self.writer.add_task(int(self.task_id), self.task_name or None, self.split):
                self.get_logger().info(f"task {self.task_id} added to the store's task table ({self.split})")
        except Exception:
            self.writer.close()
            raise
        self.stream: EpisodeStream | None = None
        self.ticks: deque[dict] = deque()
        self.joints = StampedHistory(maxlen=2048)  # joint states in stamp order
        self.last_tick_ns: int | None = None
        self.rejected = 0
        self.dropped = 0
        self.rows = 0
        self.rows_log_time = 0  # rows of the take paired by arrival time (a message without a stamp)
        self.unstamped = 0  # images and joint states without a header stamp
        self.committed = 0
        self.write_error = ""  # set by a failed write; cleared when the store is writable again
        self.stopped_by = "shutdown"  # run_node records the signal that stopped the process

        reliable = QoSProfile(depth=100)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, qos_profile_sensor_data)
        image_qos = QoSProfile(depth=30, reliability=qos_profile_sensor_data.reliability)
        if self.transport == "raw":
            self.create_subscription(Image, "image", self._on_image, image_qos)
        else:
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, image_qos)
        cmd_type = TwistStamped if self.command_type == "twist_stamped" else Float64MultiArray
        self.create_subscription(cmd_type, "command", self._on_command, reliable)
        self.create_subscription(Float64, "reward", self._on_reward, reliable)
        self.create_subscription(Bool, "success", self._on_success, reliable)
        self.create_service(Trigger, "~/start_episode", self._on_start)
        self.create_service(SetBool, "~/end_episode", self._on_end)
        self.create_service(Trigger, "~/interrupt_episode", self._on_interrupt)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(float(diag_period), self._publish_diagnostics)
        self.get_logger().info(f"recording into {self.store_path} ({self.writer.n_episodes} episodes "
                               f"committed); call ~/start_episode")

    # -- episodes ----------------------------------------------------------------------------
    def _on_start(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        if self.write_error:
            why = self._writable_again()
            if why:
                res.success, res.message = False, (f"the store is not writable ({why}); free space or fix "
                                                   f"the store, then call ~/start_episode again")
                return res
        if self.stream is not None:
            self.stream.discard()
            self.get_logger().warning("start_episode during an episode: the open episode was discarded")
        self.stream = self.writer.stream_episode(
            int(self.task_id), {"behavior": self.behavior, "source": "recorder_node"})
        self.ticks.clear()
        self.last_tick_ns = None
        self.rows = self.rows_log_time = 0
        self.success_seen = False
        res.success, res.message = True, f"recording episode {self.writer.n_episodes}"
        return res

    def _on_end(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        res.success, res.message = self._end_take(bool(req.data), "end_episode", True)
        return res

    def _on_interrupt(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.success, res.message = self._end_take(False, "interrupt_episode", False)
        return res

    def _end_take(self, success: bool, ended_by: str, success_known: bool) -> tuple[bool, str]:
        """Write the ticks that have their command and commit the take (durably)."""
        if self.stream is None:
            return False, "no episode open: call ~/start_episode first"
        ready = [t for t in self.ticks if t["action"] is not None]
        self.dropped += len(self.ticks) - len(ready)
        if ready and self.reward_source == "sparse-success":
            ready[-1]["reward"] = 1.0 if success else 0.0
        self.ticks.clear()
        try:
            for t in ready:
                self._write(t)
            if self.rows == 0:
                self.stream.discard()
                self.stream = None
                return False, "episode had no complete row (image + state + command); discarded"
            index = self.stream.commit(success, {"ended_by": ended_by, "success_known": success_known,
                                                 "rows_log_time": self.rows_log_time})
        except Exception as e:  # a full disk, a vanished mount: the take ends, the node stays
            self._write_failed(e)
            return False, f"the take could not be written: {self.write_error}"
        self.stream = None
        self.committed += 1
        known = f"success={success}" if success_known else "success unknown"
        message = f"episode {index} committed: {self.rows} rows, {known}, ended by {ended_by}"
        self.get_logger().info(message)
        return True, message

    def _write_failed(self, error: Exception) -> None:
        """A write to the store failed: the take in progress ends (its rows are dropped when
        the store is writable again); committed episodes are untouched; new takes wait."""
        self.write_error = f"{type(error).__name__}: {error}"[:300]
        self.stream = None
        self.ticks.clear()
        self.get_logger().error(
            f"writing to {self.store_path} failed ({self.write_error}): the take in progress is lost, every "
            "committed episode is kept; new takes are refused until the store is writable again")
        self._publish_diagnostics()

    def _writable_again(self) -> str:
        """'' if the store takes writes again (the failed take's leftovers are dropped), else why not."""
        probe = os.path.join(self.store_path, ".vmerpo-write-probe")
        try:
            self.writer.reopen()  # drops the failed take's rows first: that frees their space
            with open(probe, "wb") as f:  # room for at least a chunk of images
                f.write(b"\0" * (1 << 20))
                f.flush()
                os.fsync(f.fileno())
            os.unlink(probe)
        except (OSError, StoreError) as e:
            try:
                os.unlink(probe)
            except OSError:
                pass
            return f"{type(e).__name__}: {e}"[:300]
        self.get_logger().info(f"{self.store_path} is writable again: recording resumes")
        self.write_error = ""
        return ""

    def _write(self, tick: dict) -> None:
        assert self.stream is not None  # rows are written only while an episode is open
        self.stream.append({"image": tick["image"], "state": tick["state"], "action": tick["action"],
                            "reward": np.float32(tick["reward"] or 0.0), "terminal": False,
                            "timestamp": tick["stamp"] * 1e-9})
        self.rows += 1
        self.rows_log_time += tick["log_time"]

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
    def _arrival_time(self, msg) -> tuple[int, bool]:
        """The message's header stamp, or its arrival on the node's clock if it has none."""
        t, unstamped = message_time(stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds)
        if unstamped:
            self.unstamped += 1
        return t, unstamped

    def _on_joint_states(self, msg: JointState) -> None:
        t, unstamped = self._arrival_time(msg)
        self.joints.add(t, (msg, unstamped))

    def _on_image(self, msg: Image | CompressedImage) -> None:
        if self.stream is None:
            return
        frame = stamp_to_ns(msg.header.stamp)  # what a command answering it names (0: none)
        stamp, unstamped = self._arrival_time(msg)
        if not is_tick(stamp, self.last_tick_ns, float(self.control_hz)):
            return  # thinned to the control rate (25 % tolerance for jitter)
        joint = self.joints.at_or_before(stamp)
        try:
            if joint is None:
                raise MessageError("no joint state at or before the image stamp")
            state = joint_values(joint[0], self.state_names).astype(np.float32)
            raw, encoding = (image_to_array(msg) if isinstance(msg, Image)
                             else compressed_image_to_array(msg))
            image = to_model_image(raw, int(self.image_size), encoding, crop=self.crop)
        except ValueError as e:
            self.rejected += 1
            self.get_logger().warning(f"frame not recorded: {e}", throttle_duration_sec=2.0)
            return
        self.last_tick_ns = stamp
        self.ticks.append({"stamp": stamp, "frame": frame, "received": time.monotonic(), "image": image,
                           "state": state, "action": None, "reward": None,
                           "log_time": bool(unstamped or joint[1])})
        self._finalize_guarded()

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
        for tick in self.ticks:  # the first command that answers a tick is its action
            if tick["action"] is None and answers(tick["frame"], tick["received"], frame, now):
                tick["action"] = action
        self._finalize_guarded()

    def _finalize_guarded(self) -> None:
        try:
            self._finalize()
        except Exception as e:  # the node stays up; see _write_failed
            self._write_failed(e)

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
        if self.stream is not None:  # a stop mid-take: keep it, marked as interrupted
            ok, message = self._end_take(False, self.stopped_by, False)
            log = self.get_logger().warning if ok else self.get_logger().error
            log(f"stopped mid-episode ({self.stopped_by}): {message}")
        self.writer.close()

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_name()}: recorder", hardware_id=str(self.store_path))
        if self.write_error:
            status.level = DiagnosticStatus.ERROR
            status.message = f"store not writable, takes refused: {self.write_error}"
        else:
            status.level = DiagnosticStatus.OK
            status.message = "recording" if self.stream is not None else "idle"
        values = {"committed_episodes": str(self.writer.n_episodes), "committed_this_run": str(self.committed),
                  "rows_in_take": str(self.rows if self.stream is not None else 0),
                  "rejected_frames": str(self.rejected), "dropped_ticks": str(self.dropped),
                  "unstamped_messages": str(self.unstamped),
                  "write_error": self.write_error}
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
