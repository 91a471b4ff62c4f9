"""`policy_node`: an exported vmerpo policy driving a robot over ROS 2 (contract 3).

Lifecycle: configure loads the ONNX file through `PolicyRuntime` (the one class sim
evaluation uses) and refuses a policy whose spec differs from the node's parameters;
activate arms the node; it starts *disabled* and commands flow only after `~/enable true`
(which also resets the latent state). Deactivate publishes the hold command.

One action per new camera frame: image -> `to_model_image` (the one preprocessing function)
-> `PolicyRuntime.act` -> `SafetyLimiter` (the one limiter, shared with sim evaluation) ->
`command`; the limited action is fed back to the runtime as `prev_action`. A watchdog
publishes the hold action (zeros for delta/velocity interfaces, the current joint positions
for position interfaces) while the newest frame is older than `obs_timeout_s`; an invalid
frame or joint state gets the hold action at once, never a guess.

`~/enable` is a software stop, not a safety-rated emergency stop: configure the
controller's own command timeout as well.
"""

from __future__ import annotations

from robot_nodes.netsafe import ensure_safe_before_rclpy

ensure_safe_before_rclpy()

import time  # noqa: E402
from collections import deque  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.publisher import Publisher  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from learning.runtime.policy_runtime import PolicyRuntime  # noqa: E402
from learning.runtime.safety import SafetyLimiter  # noqa: E402
from learning.runtime.spec import POSITION_TYPES  # noqa: E402
from perception.preprocess import to_model_image  # noqa: E402
from robot_nodes.common import declare, run_node  # noqa: E402
from robot_nodes.conversions import (  # noqa: E402
    DEFAULT_MAX_IMAGE_PIXELS,
    MessageError,
    action_to_twist,
    fill_float64_array,
    image_to_array,
    joint_values,
    stamp_to_ns,
)

INTERFACES = ("float64_array", "twist_stamped")
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class PolicyNode(LifecycleNode):
    _last_frame: float | None
    _pending: tuple[np.ndarray, int, float] | None
    _answered: tuple[int, np.ndarray] | None  # (frame stamp, its command)
    _holding: np.ndarray | None

    def __init__(self, node_name: str = "policy_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        A = Parameter.Type
        d = lambda *a: declare(self, *a)  # noqa: E731
        self.p_policy = d("policy", "", "path of the exported policy (.onnx)")
        self.p_providers = d("providers", "cpu", "onnxruntime providers: cpu | cuda | auto")
        self.p_threads = d("intra_op_threads", 1, "onnxruntime threads")
        self.p_interface = d("command_interface", "float64_array",
                             "float64_array (ros2_control forward command controller) | "
                             "twist_stamped (MoveIt Servo)")
        self.p_frame_id = d("twist_frame_id", "base_link", "frame of TwistStamped commands")
        self.p_m_per_unit = d("metres_per_action_unit", 0.01,
                              "ee_delta -> twist: metres per action unit per control step")
        self.p_image_size = d("image_size", 0, "expected model image size (0: no check)")
        self.p_action_type = d("action_type", "", "expected action type ('': no check)")
        self.p_action_names = d("action_names", A.STRING_ARRAY, "expected action names (unset: no check)")
        self.p_state_names = d("state_names", A.STRING_ARRAY, "expected state names (unset: no check)")
        self.p_control_hz = d("control_hz", 0.0, "expected control rate (0: no check)")
        self.p_low = d("action_low", A.DOUBLE_ARRAY, "limits intersected with the spec's (unset: spec)")
        self.p_high = d("action_high", A.DOUBLE_ARRAY, "limits intersected with the spec's (unset: spec)")
        self.p_max_delta = d("max_delta", A.DOUBLE_ARRAY, "per-tick rate limit, 1 or A values (unset: none)")
        self.p_ws_low = d("workspace_low", A.DOUBLE_ARRAY, "end-effector box (unset: none)")
        self.p_ws_high = d("workspace_high", A.DOUBLE_ARRAY, "end-effector box (unset: none)")
        self.p_ee_names = d("ee_position_names", ["endeff_x", "endeff_y", "endeff_z"],
                            "joint_states entries holding the end-effector position (workspace box)")
        self.p_pos_scale = d("position_scale", 0.01, "metres per action unit per tick (workspace box)")
        self.p_joint_names = d("joint_names", A.STRING_ARRAY,
                               "joints read for a position interface's hold (unset: action names)")
        self.p_state_wait = d("state_wait_s", 0.0,
                              "wait up to this long for the joint state stamped with a frame "
                              "(lockstep simulation: exact pairing); 0: use the newest")
        self.p_obs_timeout = d("obs_timeout_s", 0.5, "hold when the newest frame is older than this")
        self.p_max_age = d("max_frame_age_s", 0.0,
                           "reject a frame whose header stamp is older than this on the node's clock "
                           "(needs camera and node clocks in sync); 0: off, only arrival time counts")
        self.p_watchdog = d("watchdog_period_s", 0.05, "watchdog timer period")
        self.p_max_pixels = d("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS, "larger images are rejected")
        self.p_enable_on_activate = d("enable_on_activate", False,
                                      "enable at activation (simulation only; robots: call ~/enable)")
        self.p_autostart = d("autostart", True, "configure and activate at start-up")
        self.p_diag_period = d("diagnostics_period_s", 1.0, "period of /diagnostics")

        self.runtime: PolicyRuntime | None = None
        self.limiter: SafetyLimiter | None = None
        self.active = False
        self.enabled = False
        self._pub: Publisher[Any] | None = None
        self._subs: list = []
        self._timers: list = []
        self._reset_counters()
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_service(Trigger, "~/reset", self._on_reset)
        if self.p_autostart:
            if self.trigger_configure() != SUCCESS:
                raise RuntimeError("configure failed (see the log above)")
            self.trigger_activate()

    # -- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except (ValueError, OSError) as e:
            self.get_logger().error(f"configure: {e}")
            self.runtime = None
            return FAILURE
        return SUCCESS

    def _configure(self) -> None:
        if not self.p_policy:
            raise ValueError("parameter `policy` (path of the .onnx file) is not set")
        if self.p_interface not in INTERFACES:
            raise ValueError(f"command_interface {self.p_interface!r} not one of {INTERFACES}")
        rt = PolicyRuntime(self.p_policy, providers=self.p_providers,
                           intra_op_threads=int(self.p_threads))
        spec = rt.spec
        rt.check_compatible(
            image_size=self.p_image_size or None, action_type=self.p_action_type or None,
            action_names=self.p_action_names, state_names=self.p_state_names if spec.uses_state else None,
            control_hz=self.p_control_hz or None)
        if self.p_interface == "twist_stamped":
            action_to_twist(np.zeros(spec.action_dim), spec.action_type, spec.control_hz or 1.0, 1.0)
        A = spec.action_dim
        low = np.asarray(spec.action_low, np.float64)
        high = np.asarray(spec.action_high, np.float64)
        for name, value, pick in (("action_low", self.p_low, np.maximum), ("action_high", self.p_high, np.minimum)):
            if value is not None:
                if len(value) != A:
                    raise ValueError(f"{name} has {len(value)} values, the policy has {A} actions")
                limit = pick(low if name == "action_low" else high, np.asarray(value, np.float64))
                low, high = (limit, high) if name == "action_low" else (low, limit)
        if np.any(low >= high):
            raise ValueError(f"action limits of the policy and the parameters do not overlap: {low} .. {high}")
        self.position_interface = (spec.action_type in POSITION_TYPES
                                   or spec.hold_action == "current position")
        max_delta = None
        if self.p_max_delta is not None:
            if len(self.p_max_delta) not in (1, A):
                raise ValueError(f"max_delta has {len(self.p_max_delta)} values; give 1 or {A}")
            max_delta = self.p_max_delta[0] if len(self.p_max_delta) == 1 else self.p_max_delta
        ws = None
        if (self.p_ws_low is None) != (self.p_ws_high is None):
            raise ValueError("give both workspace_low and workspace_high, or neither")
        if self.p_ws_low is not None:
            ws = (self.p_ws_low, self.p_ws_high)
        # A position interface's hold (the current position) is built here, never the limiter's.
        hold = np.clip(0.0, low, high) if self.position_interface else np.asarray(spec.hold(), np.float64)
        self.limiter = SafetyLimiter(
            low=low, high=high, max_delta=max_delta,
            workspace_low=ws[0] if ws else None, workspace_high=ws[1] if ws else None,
            position_scale=float(self.p_pos_scale), hold_action=hold)
        self.joint_names = self.p_joint_names or list(spec.action_names)
        self._needs_joints = bool(spec.uses_state or self.limiter.needs_ee_position)
        self.runtime = rt
        self.spec = spec
        self.image_size = spec.image_size
        if self.p_interface == "twist_stamped":
            self._pub = self.create_publisher(TwistStamped, "command", 10)
        else:
            self._pub = self.create_publisher(Float64MultiArray, "command", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._subs = [  # joint states first: when both are ready, the state is taken first
            self.create_subscription(JointState, "joint_states", self._on_joint_states, qos_profile_sensor_data),
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data),
        ]
        self._timers = [self.create_timer(float(self.p_watchdog), self._on_watchdog),
                        self.create_timer(float(self.p_diag_period), self._publish_diagnostics)]
        self.get_logger().info(
            f"loaded {self.p_policy}: {spec.action_type} {spec.action_names}, image {spec.image_size}px, "
            f"providers {rt.providers}; command as {self.p_interface}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        if self.p_enable_on_activate:
            self._set_enabled(True)
        self.get_logger().info("active (commands flow only while enabled: call ~/enable true)"
                               if not self.enabled else "active and enabled")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # Flags first, so no tick or watchdog hold can follow the deactivate hold.
        was_enabled, self.enabled, self.active = self.enabled, False, False
        if was_enabled:
            self._publish_hold("deactivate")
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for s in self._subs:
            self.destroy_subscription(s)
        for t in self._timers:
            self.destroy_timer(t)
        if self._pub is not None:
            self.destroy_publisher(self._pub)
        self._subs, self._timers, self._pub = [], [], None
        self.runtime = self.limiter = None
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_process_exit()
        return SUCCESS

    def on_process_exit(self) -> None:
        if self.active and self.enabled and self._pub is not None:
            self._publish_hold("shutdown")
        self.enabled = self.active = False

    # -- services ------------------------------------------------------------------------------
    def _on_enable(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        if req.data and not self.active:
            res.success, res.message = False, "not active: configure and activate the node first"
            return res
        self._set_enabled(bool(req.data))
        res.success, res.message = True, "enabled" if self.enabled else "disabled (hold sent)"
        return res

    def _set_enabled(self, on: bool) -> None:
        if on and not self.enabled:
            self._new_episode()
            self._last_frame = self._pending = None  # a frame from before the enable is not acted upon
            self.enabled = True
        elif not on and self.enabled:
            self.enabled = False  # first: no policy command after this point
            self._publish_hold("disabled")

    def _on_reset(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        if self.runtime is None:
            res.success, res.message = False, "not configured"
            return res
        self._new_episode()
        res.success, res.message = True, "new episode: latent state and rate limit reset"
        return res

    def _new_episode(self) -> None:
        assert self.runtime is not None and self.limiter is not None
        self.runtime.reset()
        current = self._current_position()
        self.limiter.reset(current if self.position_interface and current is not None else None)
        self.episode_ticks = 0
        self._answered = None

    # -- observations ----------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        self._joints.append((stamp_to_ns(msg.header.stamp), time.monotonic(), msg))
        pending = self._pending
        if pending is not None and self._joints[-1][0] >= pending[1]:
            self._pending = None
            self._act(*pending)

    def _current_position(self) -> np.ndarray | None:
        if not self._joints:
            return None
        try:
            return joint_values(self._joints[-1][2], self.joint_names)
        except MessageError:
            return None

    def _on_image(self, msg: Image) -> None:
        received = time.monotonic()
        if not self.active or self.runtime is None:
            return
        stamp = self._last_stamp = stamp_to_ns(msg.header.stamp)
        answered = self._answered
        if self.enabled and answered is not None and stamp and stamp == answered[0]:
            # The same frame again (a lockstep simulator resends a frame whose command it did
            # not get): one action per frame, so repeat the one computed for it.
            self._publish(answered[1], stamp)
            return
        max_age = float(self.p_max_age)
        if max_age > 0 and stamp:
            age = (self.get_clock().now().nanoseconds - stamp) * 1e-9
            if age > max_age:
                self._reject(MessageError(f"frame stamped {age:.3f} s ago exceeds max_frame_age_s={max_age}"))
                return
        t0 = time.perf_counter()
        try:
            raw, encoding = image_to_array(msg, int(self.p_max_pixels))
            image = to_model_image(raw, self.image_size, encoding, crop=self.spec.crop)
        except ValueError as e:  # MessageError is a ValueError; so is to_model_image's
            self._reject(e)
            return
        self.preprocess_latency.append(time.perf_counter() - t0)
        if self._pending is not None:  # a newer frame replaces one still waiting for its state
            self._pending = None
        if self._needs_joints and float(self.p_state_wait) > 0 and (
                not self._joints or self._joints[-1][0] < stamp):
            self._pending = (image, stamp, received)  # acted upon when its joint state arrives
            return
        self._act(image, stamp, received)

    def _reject(self, error: Exception) -> None:
        self.rejected += 1
        self._last_frame = None
        self.get_logger().warning(f"rejected observation: {error}", throttle_duration_sec=2.0)
        if self.enabled:
            self._publish_hold("invalid observation")

    def _act(self, image: np.ndarray, stamp: int, received: float) -> None:
        """One tick: the policy's action for this frame, limited, published, fed back."""
        try:
            state, ee = self._joint_inputs(stamp, received)
        except ValueError as e:
            self._reject(e)
            return
        self._last_frame = received
        if not self.enabled:
            return
        assert self.runtime is not None and self.limiter is not None  # enabled: configured
        t0 = time.perf_counter()
        try:
            action = self.runtime.act(image, state)
        except ValueError as e:
            self.rejected += 1
            self.get_logger().error(f"policy failed on a frame: {e}", throttle_duration_sec=2.0)
            self._publish_hold("policy error")
            return
        self.latency.append(time.perf_counter() - t0)
        invalid_before = self.limiter.stats.invalid
        applied = self.limiter.limit(action, ee)
        if self.limiter.stats.invalid != invalid_before:
            self._publish_hold("limiter rejected the action")
            return
        self.runtime.set_applied_action(applied)
        self._publish(applied, stamp)
        self._answered = (stamp, applied)
        self.ticks += 1
        self.episode_ticks += 1
        self.tick_times.append(received)
        self._holding = None

    def _joint_inputs(self, stamp: int, now: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The policy's state and the end-effector position (workspace box), if needed: from
        the newest joint state stamped at or before the frame (else the newest one)."""
        if not self._needs_joints:
            return None, None
        if not self._joints or now - self._joints[-1][1] > float(self.p_obs_timeout):
            raise MessageError("no joint_states newer than obs_timeout_s")
        msg = self._joints[-1][2]
        for s, _, m in reversed(self._joints):
            if s <= stamp:
                msg = m
                break
        state = joint_values(msg, self.spec.state_names).astype(np.float32) if self.spec.uses_state else None
        assert self.limiter is not None  # _needs_joints is set with the limiter
        ee = joint_values(msg, self.p_ee_names) if self.limiter.needs_ee_position else None
        return state, ee

    # -- commands ------------------------------------------------------------------------------
    def _publish(self, action: np.ndarray, frame_stamp_ns: int | None) -> None:
        if self._pub is None:
            return
        if self.p_interface == "twist_stamped":
            msg = TwistStamped()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = self.p_frame_id
            lin, ang = action_to_twist(action, self.spec.action_type, self.spec.control_hz,
                                       float(self.p_m_per_unit))
            (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z) = lin
            (msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) = ang
        else:
            msg = Float64MultiArray()
            fill_float64_array(msg, action, frame_stamp_ns)
        self._pub.publish(msg)

    def _publish_hold(self, why: str) -> None:
        """The hold action: zeros (delta/velocity) or the current joint positions (position)."""
        if self.limiter is None:
            return
        assert self.runtime is not None  # set and cleared with the limiter
        if self.position_interface:
            if self._holding is None:
                current = self._current_position()
                if current is None:
                    self.get_logger().error(
                        f"hold ({why}): no valid joint_states for {self.joint_names}; publishing nothing "
                        "(the controller's command timeout must stop the arm)", throttle_duration_sec=2.0)
                    return
                # Latched: holding a fixed target, not chasing a sagging measurement.
                self._holding = np.clip(current, self.limiter.low, self.limiter.high)
            hold = self._holding.astype(np.float32)
            self.limiter.reset(hold)
        else:
            hold = self.limiter.hold()
        self.runtime.set_applied_action(hold)
        self._answered = None
        # Stamped with the newest frame seen (0: none), so a lockstep simulator applies a hold
        # only as the answer to its current frame, never a stale one to a new episode.
        self._publish(hold, self._last_stamp)
        self.holds += 1

    def _on_watchdog(self) -> None:
        if not (self.active and self.enabled):
            return
        now = time.monotonic()
        pending = self._pending
        if pending is not None and now - pending[2] > float(self.p_state_wait):
            self._pending = None
            self._act(*pending)
        if self._last_frame is None or now - self._last_frame > float(self.p_obs_timeout):
            self.stale += 1
            self._publish_hold("stale observation")

    # -- diagnostics ---------------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self.ticks = self.rejected = self.stale = self.holds = self.episode_ticks = 0
        self.latency: deque[float] = deque(maxlen=1000)
        self.preprocess_latency: deque[float] = deque(maxlen=1000)
        self.tick_times: deque[float] = deque(maxlen=300)
        self._last_frame = None
        self._joints: deque[tuple[int, float, JointState]] = deque(maxlen=64)
        self._last_stamp = 0
        self._pending = None
        self._answered = None  # (frame stamp, its command)
        self._needs_joints = False
        self._holding = None
        self.position_interface = False

    def _publish_diagnostics(self) -> None:
        lat = np.asarray(self.latency) * 1e3 if self.latency else np.zeros(1)
        pre = np.asarray(self.preprocess_latency) * 1e3 if self.preprocess_latency else np.zeros(1)
        times = list(self.tick_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        status = DiagnosticStatus(name=f"{self.get_name()}: policy", hardware_id=str(self.p_policy))
        status.level = DiagnosticStatus.OK if self.enabled else DiagnosticStatus.WARN
        status.message = "enabled" if self.enabled else ("armed, disabled" if self.active else "inactive")
        values = {
            "inference_latency_p50_ms": f"{np.percentile(lat, 50):.3f}",
            "inference_latency_p99_ms": f"{np.percentile(lat, 99):.3f}",
            "preprocess_latency_p50_ms": f"{np.percentile(pre, 50):.3f}",
            "tick_rate_hz": f"{rate:.2f}", "ticks": str(self.ticks),
            "stale_count": str(self.stale), "rejected_count": str(self.rejected),
            "hold_count": str(self.holds), "episode_ticks": str(self.episode_ticks),
        }
        if self.limiter is not None:
            values.update({f"limiter_{k}": str(v) for k, v in self.limiter.stats.as_dict().items()})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
