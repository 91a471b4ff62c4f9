"""`policy_node`: an exported vmerpo policy driving a robot over ROS 2 (contract 3).

Lifecycle: configure loads the ONNX file through `PolicyRuntime` (the one class sim
evaluation uses) and refuses a policy whose spec differs from the node's parameters;
activate arms the node; it starts *disabled* and commands flow only after `~/enable true`
(which also resets the latent state). Deactivate publishes the hold command.

One action per new camera frame: image -> `to_model_image` (the one preprocessing function)
-> `PolicyRuntime.act` -> `SafetyLimiter` (the one limiter, shared with sim evaluation) ->
`command`; the limited action is fed back to the runtime as `prev_action`. A watchdog
publishes the hold action while the newest frame is older than `obs_timeout_s`; an invalid
frame or joint state gets the hold action at once, never a guess. The hold is zeros for
delta/velocity interfaces; for position interfaces it is the last commanded position (the
last valid measured one before the first command), always through the rate limiter, so a
corrupt joint reading never moves the arm. A position interface cannot be enabled without a
valid, fresh joint state: there must always be a position to hold.

Failures are contained (docs/robustness.md): whatever fails between a frame and a command
(conversion, preprocessing, inference, limiter) gets the hold, is counted and reported on
`/diagnostics` (WARN, ERROR from `failures_for_error` in a row); after
`max_consecutive_failures` in a row the node disables itself and says why. It never exits
on a bad frame. Each new image is acted upon, also when a camera's stamp froze; a frame
with the same stamp and the same pixels as the last one answered (a lockstep simulator
resending) gets the same command again. Stamps going backwards are rejected; with
`max_frame_age_s` set (synchronised clocks), so are stamps from the future.

`image_transport: compressed` subscribes `<image>/compressed` (sensor_msgs/CompressedImage,
JPEG or PNG) instead of the raw topic; both go through the one preprocessing function.

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
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from learning.alignment import StampedHistory, message_time  # noqa: E402
from learning.runtime.policy_runtime import InferenceError, PolicyRuntime  # noqa: E402
from learning.runtime.safety import SafetyLimiter  # noqa: E402
from learning.runtime.spec import POSITION_TYPES  # noqa: E402
from perception.preprocess import to_model_image  # noqa: E402
from robot_nodes.common import declare, run_node  # noqa: E402
from robot_nodes.conversions import (  # noqa: E402
    DEFAULT_MAX_IMAGE_PIXELS,
    MessageError,
    action_to_twist,
    compressed_image_to_array,
    fill_float64_array,
    image_to_array,
    joint_values,
    stamp_to_ns,
)

INTERFACES = ("float64_array", "twist_stamped")
TRANSPORTS = ("raw", "compressed")
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class PolicyNode(LifecycleNode):
    _last_frame: float | None
    _pending: tuple[np.ndarray, int, float, np.ndarray, int] | None
    _answered: tuple[int, np.ndarray, np.ndarray] | None  # (frame stamp, its pixels, its command)
    _measured: np.ndarray | None  # the newest valid joint positions (position interfaces)
    _last_command: np.ndarray | None  # the last command published this episode
    unstamped_joint_states: int  # joint states without a header stamp (paired by arrival)

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
                              "(lockstep simulation: exact pairing); 0: the newest stamped at or before the frame")
        self.p_obs_timeout = d("obs_timeout_s", 0.5, "hold when the newest frame is older than this")
        self.p_max_age = d("max_frame_age_s", 0.0,
                           "reject a frame whose header stamp is older than this on the node's clock "
                           "(needs camera and node clocks in sync); 0: off, only arrival time counts")
        self.p_watchdog = d("watchdog_period_s", 0.05, "watchdog timer period")
        self.p_max_pixels = d("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS, "larger images are rejected")
        self.p_future_tol = d("future_stamp_tolerance_s", 0.05,
                              "with max_frame_age_s set: reject frames stamped further ahead of the "
                              "node's clock than this (a clock jump)")
        self.p_transport = d("image_transport", "raw",
                             "raw: sensor_msgs/Image on `image` | compressed: sensor_msgs/CompressedImage "
                             "(JPEG/PNG) on `image/compressed`")
        self.p_max_failures = d("max_consecutive_failures", 30,
                                "frames failing in a row (conversion, preprocessing, inference, limiter) "
                                "after which the node disables itself; 0: never")
        self.p_failures_for_error = d("failures_for_error", 3,
                                      "/diagnostics reports ERROR from this many failures in a row (WARN before)")
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
        if self.p_transport not in TRANSPORTS:
            raise ValueError(f"image_transport {self.p_transport!r} not one of {TRANSPORTS}")
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
        # A position interface's hold (the last commanded position) is built here, never the limiter's.
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
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)
            if self.p_transport == "raw" else
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos_profile_sensor_data),
        ]
        self._timers = [self.create_timer(float(self.p_watchdog), self._on_watchdog),
                        self.create_timer(float(self.p_diag_period), self._publish_diagnostics)]
        self.get_logger().info(
            f"loaded {self.p_policy}: {spec.action_type} {spec.action_names}, image {spec.image_size}px, "
            f"providers {rt.providers}; image from {self._subs[1].topic_name} ({self.p_transport}); "
            f"command as {self.p_interface}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        if self.p_enable_on_activate:
            if self._cannot_enable() is None:
                self._set_enabled(True)
            else:  # a position interface: enabled when the first valid joint state arrives
                self._enable_when_ready = True
        self.get_logger().info("active (commands flow only while enabled: call ~/enable true)"
                               if not self.enabled else "active and enabled")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # Flags first, so no tick or watchdog hold can follow the deactivate hold.
        was_enabled, self.enabled, self.active = self.enabled, False, False
        self._enable_when_ready = False
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
        if req.data and not self.enabled:
            why = self._cannot_enable()
            if why:
                res.success, res.message = False, why
                return res
        self._set_enabled(bool(req.data))
        res.success, res.message = True, "enabled" if self.enabled else "disabled (hold sent)"
        return res

    def _cannot_enable(self) -> str | None:
        """Why enabling now would be unsafe (None: it is safe)."""
        if self.position_interface and (
                self._measured is None or time.monotonic() - self._measured_at > float(self.p_obs_timeout)):
            return (f"no valid joint_states for {self.joint_names} within obs_timeout_s="
                    f"{float(self.p_obs_timeout)}: a position interface needs the current position to hold")
        return None

    def _set_enabled(self, on: bool) -> None:
        if on and not self.enabled:
            self._new_episode()
            self._last_frame = self._pending = None  # a frame from before the enable is not acted upon
            self.consecutive_failures = 0
            self.disabled_because = ""
            self._enable_when_ready = False
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
        self.limiter.reset(self._measured if self.position_interface else None)
        self._last_command = None
        self._newest_stamp = 0
        self.episode_ticks = 0
        self._answered = None

    # -- observations ----------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        t, unstamped = message_time(stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds)
        self.unstamped_joint_states += unstamped
        self._joints.add(t, msg)
        self._joint_received = time.monotonic()
        if self.position_interface:
            try:
                self._measured = joint_values(msg, self.joint_names)
                self._measured_at = time.monotonic()
            except MessageError:
                self.invalid_joint_states += 1  # never a hold target; the last valid one stays
            if self._enable_when_ready and self.active and self._cannot_enable() is None:
                self._set_enabled(True)
                self.get_logger().info("enabled (enable_on_activate: the first valid joint state arrived)")
        pending = self._pending
        if pending is not None and self._joints[-1][0] >= pending[4]:
            self._pending = None
            self._guarded(self._act, *pending)

    def _guarded(self, fn, *args) -> None:
        """Run one step of the frame -> command path; whatever it raises is contained."""
        try:
            fn(*args)
        except Exception as e:  # the node never exits on a frame: hold, count, report
            self._fail(e, "internal error")

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._guarded(self._frame, msg, time.monotonic())

    def _frame(self, msg: Image | CompressedImage, received: float) -> None:
        if not self.active or self.runtime is None:
            return
        stamp = stamp_to_ns(msg.header.stamp)
        # the time its joint state is paired by: the stamp, or the arrival if it has none
        pair_t = message_time(stamp, self.get_clock().now().nanoseconds)[0]
        try:
            raw, encoding = (image_to_array(msg, int(self.p_max_pixels)) if isinstance(msg, Image)
                             else compressed_image_to_array(msg, int(self.p_max_pixels)))
        except ValueError as e:
            self._fail(e, "observation")
            return
        answered = self._answered
        if self.enabled and answered is not None and stamp and stamp == answered[0]:
            if np.array_equal(raw, answered[1]):
                # The same frame again (a lockstep simulator resends a frame whose command it
                # did not get): one action per frame, so repeat the one computed for it.
                self._last_stamp = stamp
                self._publish(answered[2], stamp)
                return
            self.frozen_stamps += 1  # new pixels under an old stamp: a new frame all the same
        if stamp and stamp < self._newest_stamp:
            self.backwards_stamps += 1
            self._fail(MessageError(f"frame stamp went back {(self._newest_stamp - stamp) * 1e-9:.3f} s "
                                    "behind the newest frame"), "observation")
            return
        max_age = float(self.p_max_age)
        if max_age > 0 and stamp:
            age = (self.get_clock().now().nanoseconds - stamp) * 1e-9
            if age > max_age:
                self._fail(MessageError(f"frame stamped {age:.3f} s ago exceeds max_frame_age_s={max_age}"),
                           "observation")
                return
            if -age > float(self.p_future_tol):
                self.future_stamps += 1
                self._fail(MessageError(f"frame stamped {-age:.3f} s in the future (beyond "
                                        f"future_stamp_tolerance_s={float(self.p_future_tol)}): camera "
                                        "and node clocks disagree"), "observation")
                return
        self._last_stamp = stamp
        self._newest_stamp = max(self._newest_stamp, stamp)
        t0 = time.perf_counter()
        try:
            image = to_model_image(raw, self.image_size, encoding, crop=self.spec.crop)
        except ValueError as e:
            self._fail(e, "observation")
            return
        self.preprocess_latency.append(time.perf_counter() - t0)
        if self._pending is not None:  # a newer frame replaces one still waiting for its state
            self._pending = None
        if self._needs_joints and float(self.p_state_wait) > 0 and (
                not self._joints or self._joints[-1][0] < pair_t):
            self._pending = (image, stamp, received, raw, pair_t)  # acted upon when its joint state arrives
            return
        self._act(image, stamp, received, raw, pair_t)

    def _fail(self, error: Exception, kind: str) -> None:
        """A frame that produced no command: hold, count, report; disable after too many."""
        if kind == "observation":
            self.rejected += 1
        else:
            self.failures += 1
        self.consecutive_failures += 1
        self.last_failure = f"{kind}: {error}"[:300]
        self._last_frame = None
        log = self.get_logger().warning if kind == "observation" else self.get_logger().error
        log(f"no command for this frame ({self.last_failure}); holding", throttle_duration_sec=2.0)
        report_now = self.consecutive_failures == int(self.p_failures_for_error)
        if self.enabled:
            self._publish_hold(kind)
            limit = int(self.p_max_failures)
            if limit and self.consecutive_failures >= limit:
                report_now = True
                self.enabled = False  # the hold above is the last command
                self.disabled_because = (f"{self.consecutive_failures} frames in a row failed "
                                         f"(max_consecutive_failures={limit}); last: {self.last_failure}")
                self.get_logger().error(f"disabled itself: {self.disabled_because}. Fix the cause, then "
                                        "call ~/enable true")
        if report_now:
            self._publish_diagnostics()  # an ERROR is reported at once, not at the next period

    def _act(self, image: np.ndarray, stamp: int, received: float, raw: np.ndarray, pair_t: int) -> None:
        """One tick: the policy's action for this frame, limited, published, fed back."""
        try:
            state, ee = self._joint_inputs(pair_t, received)
        except ValueError as e:
            self._fail(e, "observation")
            return
        self._last_frame = received
        if not self.enabled:
            return
        assert self.runtime is not None and self.limiter is not None  # enabled: configured
        t0 = time.perf_counter()
        try:
            action = self.runtime.act(image, state)
        except InferenceError as e:
            self._fail(e, "inference")
            return
        except ValueError as e:  # the observation does not fit the policy's spec
            self._fail(e, "observation")
            return
        self.latency.append(time.perf_counter() - t0)
        invalid_before = self.limiter.stats.invalid
        applied = self.limiter.limit(action, ee)
        if self.limiter.stats.invalid != invalid_before:
            self._fail(ValueError("limiter rejected the action (non-finite)"), "limiter")
            return
        self.runtime.set_applied_action(applied)
        self._publish(applied, stamp)
        self._answered = (stamp, raw, applied)
        self.ticks += 1
        self.episode_ticks += 1
        self.consecutive_failures = 0
        self.tick_times.append(received)

    def _joint_inputs(self, t: int, now: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The policy's state and the end-effector position (workspace box), if needed: from
        the newest joint state stamped at or before the frame (`learning.alignment`, the rule
        the recorder and import-bag follow). A frame with none gets the hold: the logs never
        hold such a row."""
        if not self._needs_joints:
            return None, None
        if not self._joints or now - self._joint_received > float(self.p_obs_timeout):
            raise MessageError("no joint_states newer than obs_timeout_s")
        msg = self._joints.at_or_before(t)
        if msg is None:
            raise MessageError(f"no joint state stamped at or before the frame ({t * 1e-9:.3f} s; the oldest kept "
                               f"is {self._joints[0][0] * 1e-9:.3f} s): camera and joint clocks disagree?")
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
        self._last_command = np.asarray(action, np.float64).copy()

    def _publish_hold(self, why: str) -> None:
        """The hold action: zeros (delta/velocity), or for position interfaces the last
        commanded position (the last valid measured one before the first command), through
        the limits and the rate limit."""
        if self.limiter is None:
            return
        assert self.runtime is not None  # set and cleared with the limiter
        if self.position_interface:
            target = self._last_command if self._last_command is not None else self._measured
            if target is None:  # not reachable while enabled: enabling needs a valid joint state
                self.get_logger().error(
                    f"hold ({why}): no position to hold for {self.joint_names}; publishing nothing "
                    "(the controller's command timeout must stop the arm)", throttle_duration_sec=2.0)
                return
            hold = self.limiter.toward(target)
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
            self._guarded(self._act, *pending)
        if self.enabled and (self._last_frame is None or now - self._last_frame > float(self.p_obs_timeout)):
            self.stale += 1
            self._publish_hold("stale observation")

    # -- diagnostics ---------------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self.ticks = self.rejected = self.stale = self.holds = self.episode_ticks = 0
        self.failures = self.consecutive_failures = 0
        self.frozen_stamps = self.backwards_stamps = self.future_stamps = self.invalid_joint_states = 0
        self.last_failure = self.disabled_because = ""
        self.latency: deque[float] = deque(maxlen=1000)
        self.preprocess_latency: deque[float] = deque(maxlen=1000)
        self.tick_times: deque[float] = deque(maxlen=300)
        self._last_frame = None
        self._joints = StampedHistory(maxlen=2048)  # joint states in stamp order
        self._joint_received = 0.0  # when the newest joint state arrived (monotonic)
        self.unstamped_joint_states = 0
        self._last_stamp = self._newest_stamp = 0
        self._pending = None
        self._answered = None
        self._needs_joints = False
        self._measured = None
        self._measured_at = 0.0
        self._last_command = None
        self._enable_when_ready = False
        self.position_interface = False

    def _publish_diagnostics(self) -> None:
        if not hasattr(self, "_diag_pub"):
            return
        lat = np.asarray(self.latency) * 1e3 if self.latency else np.zeros(1)
        pre = np.asarray(self.preprocess_latency) * 1e3 if self.preprocess_latency else np.zeros(1)
        times = list(self.tick_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        status = DiagnosticStatus(name=f"{self.get_name()}: policy", hardware_id=str(self.p_policy))
        if self.disabled_because:
            status.level, status.message = DiagnosticStatus.ERROR, f"disabled itself: {self.disabled_because}"
        elif self.consecutive_failures >= max(1, int(self.p_failures_for_error)):
            status.level = DiagnosticStatus.ERROR
            status.message = f"{self.consecutive_failures} frames in a row failed; last: {self.last_failure}"
        elif self.consecutive_failures:
            status.level, status.message = DiagnosticStatus.WARN, f"frame failed: {self.last_failure}"
        else:
            status.level = DiagnosticStatus.OK if self.enabled else DiagnosticStatus.WARN
            status.message = "enabled" if self.enabled else ("armed, disabled" if self.active else "inactive")
        values = {
            "inference_latency_p50_ms": f"{np.percentile(lat, 50):.3f}",
            "inference_latency_p99_ms": f"{np.percentile(lat, 99):.3f}",
            "preprocess_latency_p50_ms": f"{np.percentile(pre, 50):.3f}",
            "tick_rate_hz": f"{rate:.2f}", "ticks": str(self.ticks),
            "stale_count": str(self.stale), "rejected_count": str(self.rejected),
            "failure_count": str(self.failures), "consecutive_failures": str(self.consecutive_failures),
            "last_failure": self.last_failure,
            "hold_count": str(self.holds), "episode_ticks": str(self.episode_ticks),
            "frozen_stamp_count": str(self.frozen_stamps), "backwards_stamp_count": str(self.backwards_stamps),
            "future_stamp_count": str(self.future_stamps), "invalid_joint_states": str(self.invalid_joint_states),
            "unstamped_joint_states": str(self.unstamped_joint_states),
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
