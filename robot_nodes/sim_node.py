"""`sim_node`: a MuJoCo task (sim/envs.py) behaving like a robot driver (contract 3).

Publishes `image` (sensor_msgs/Image rgb8, the env's camera at the model size),
`joint_states` (sensor_msgs/JointState: the env's state channels, plus the end-effector
position under `ee_position_names` for the policy node's workspace box), `reward`
(std_msgs/Float64, the transition's reward) and `success` (std_msgs/Bool); applies
`command` (std_msgs/Float64MultiArray, the env's action units); `~/reset` (std_srvs/Trigger)
starts a new episode of the task in parameter `task_id` (with the seed in parameter `seed`),
and answers with the finished episode's result as JSON.

lockstep: true  -> the sim advances one control step per command, so runs are reproducible
                   and equal direct evaluation (`sim.evaluate`); a command that names the
                   frame it answers (policy_node does) is applied only to that frame.
lockstep: false -> real time: a timer steps at the control rate with the newest command, or
                   the hold action if none arrived within `command_timeout_s` (as a
                   controller's own command timeout would).
After `max_episode_steps` the last frame is published and commands are ignored until reset.
"""

from __future__ import annotations

from robot_nodes.netsafe import ensure_safe_before_rclpy

ensure_safe_before_rclpy()

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64, Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from robot_nodes.common import declare, run_node  # noqa: E402
from robot_nodes.conversions import array_to_image, frame_stamp_of, ns_to_stamp  # noqa: E402


class SimNode(Node):
    def __init__(self, node_name: str = "sim_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        d = lambda *a: declare(self, *a)  # noqa: E731
        family = d("family", "reach-v3", "Meta-World task family (sim/envs.py FAMILIES)")
        image_size = d("image_size", 64, "camera image side (the model size)")
        max_steps = d("max_episode_steps", 150, "control steps per episode")
        action_repeat = d("action_repeat", 1, "simulator steps per control step")
        d("task_id", 0, "task of the next episode started by ~/reset")
        d("seed", 0, "seed of the next episode (sim.evaluate.episode_seed), recorded in its result; "
          "it draws the hand's start when hand_init_noise_m > 0")
        hand_noise = d("hand_init_noise_m", 0.0, "random hand start, up to +- this many metres per axis "
                       "(0: Meta-World's fixed start)")
        goal_pin = d("goal_pin", False, "draw a pin under the goal marker (sim.envs; as the policy's logs were)")
        self.lockstep = d("lockstep", True, "advance one control step per command")
        self.command_timeout_s = d("command_timeout_s", 0.25, "real time: hold after this long without a command")
        self.ee_names = d("ee_position_names", ["endeff_x", "endeff_y", "endeff_z"],
                          "joint_states entries carrying the end-effector position")
        self.frame_id = d("frame_id", "sim_camera", "image frame_id")
        start = d("start_episode", True, "start an episode of task_id at start-up")

        from sim.envs import make_env  # MuJoCo: imported only by the node that needs it

        self.env = make_env(family, int(image_size), int(max_steps), int(action_repeat),
                            hand_init_noise=float(hand_noise), goal_pin=bool(goal_pin))
        self.dt_ns = int(round(self.env.control_dt * 1e9))
        self.joint_names = list(self.env.state_names) + list(self.ee_names)
        self.pub_image = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.pub_joints = self.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        self.pub_reward = self.create_publisher(Float64, "reward", 10)
        self.pub_success = self.create_publisher(Bool, "success", 10)
        self.create_subscription(Float64MultiArray, "command", self._on_command, 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.rejected = 0
        self.episode: dict | None = None
        self._command: tuple[float, np.ndarray] | None = None
        self.resend_s = d("lockstep_resend_s", 1.0,
                          "lockstep: republish the frame if no command answered it for this long")
        self._last_publish = time.monotonic()
        if self.lockstep:
            self.create_timer(float(self.resend_s), self._on_resend_timer)
        else:
            self.create_timer(self.env.control_dt, self._on_timer)
        self.get_logger().info(f"{family}: {'lockstep' if self.lockstep else 'real time'} at "
                               f"{self.env.control_hz:.1f} Hz, {image_size}px, {max_steps} steps/episode")
        if start:
            self._start_episode()

    # -- episodes ----------------------------------------------------------------------------
    def _start_episode(self) -> None:
        task_id = int(self.get_parameter("task_id").value)
        self.env.set_task(task_id)
        seed = int(self.get_parameter("seed").value)
        obs = self.env.reset(seed=seed)
        self.episode = {"task_id": task_id, "seed": seed,
                        "t": 0, "return": 0.0, "success": False,
                        "steps_to_success": None, "done": False,
                        "start_ns": self.get_clock().now().nanoseconds}
        self._command = None
        self._publish_observation(obs)

    def result(self) -> dict | None:
        e = self.episode
        if e is None:
            return None
        return {"task_id": e["task_id"], "seed": e["seed"], "success": e["success"], "return": e["return"],
                "length": e["t"], "steps_to_success": e["steps_to_success"], "done": e["done"]}

    def _on_reset(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        finished = self.result()
        try:
            self._start_episode()
        except (ValueError, RuntimeError) as e:
            res.success, res.message = False, f"reset failed: {e}"
            return res
        res.success, res.message = True, json.dumps({"finished": finished, "started": self.result()})
        return res

    def _frame_ns(self) -> int:
        assert self.episode is not None  # frames exist only within an episode
        return self.episode["start_ns"] + self.episode["t"] * self.dt_ns

    def _publish_observation(self, obs: dict) -> None:
        stamp_ns = self._frame_ns()
        js = JointState()
        ns_to_stamp(stamp_ns, js.header.stamp)
        js.name = self.joint_names
        js.position = [float(x) for x in obs["state"]] + [float(x) for x in self.env.ee_position()]
        self.pub_joints.publish(js)  # before the image: the policy pairs them by stamp
        img = Image()
        ns_to_stamp(stamp_ns, img.header.stamp)
        img.header.frame_id = self.frame_id
        array_to_image(obs["image"], img)
        self.pub_image.publish(img)
        self._last_obs = obs
        self._last_publish = time.monotonic()

    def _step(self, action: np.ndarray) -> None:
        e = self.episode
        assert e is not None  # callers step only an open episode
        obs, reward, terminated, truncated, info = self.env.step(action)
        e["t"] += 1
        e["return"] += float(reward)
        if info.get("success") and not e["success"]:
            e["success"], e["steps_to_success"] = True, e["t"]
        self.pub_reward.publish(Float64(data=float(reward)))
        self.pub_success.publish(Bool(data=bool(info.get("success"))))
        e["done"] = bool(terminated or truncated)
        self._publish_observation(obs)
        if e["done"]:
            self.get_logger().info(f"episode done: {self.result()}")

    # -- commands ------------------------------------------------------------------------------
    def _valid_action(self, msg: Float64MultiArray) -> np.ndarray | None:
        a = np.asarray(msg.data, dtype=np.float64)
        if a.shape != self.env.action_low.shape or not np.all(np.isfinite(a)):
            self.rejected += 1
            self.get_logger().warning(f"rejected command {list(msg.data)}: need "
                                   f"{self.env.action_low.size} finite values", throttle_duration_sec=2.0)
            return None
        return np.clip(a, self.env.action_low, self.env.action_high).astype(np.float32)

    def _on_command(self, msg: Float64MultiArray) -> None:
        action = self._valid_action(msg)
        if action is None or self.episode is None or self.episode["done"]:
            return
        if not self.lockstep:
            self._command = (time.monotonic(), action)
            return
        stamp = frame_stamp_of(msg)
        if stamp is not None and stamp != self._frame_ns():
            return  # answers another frame (or is a watchdog hold): not this step's command
        self._step(action)

    def _on_timer(self) -> None:
        if self.episode is None or self.episode["done"]:
            return
        cmd = self._command
        if cmd is None or time.monotonic() - cmd[0] > float(self.command_timeout_s):
            action = self.env.hold_action
        else:
            action = cmd[1]
        self._step(action)

    def _on_resend_timer(self) -> None:
        # A best-effort image lost on the way would stall a lockstep run forever.
        e = self.episode
        if e is not None and not e["done"] and time.monotonic() - self._last_publish > float(self.resend_s):
            self._publish_observation(self._last_obs)

    def on_process_exit(self) -> None:
        self.env.close()


def main(args: list[str] | None = None) -> int:
    return run_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
