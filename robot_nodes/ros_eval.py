"""Closed-loop evaluation through ROS 2: the deployment path's twin of `sim.evaluate.evaluate`.

`ros_evaluate` starts sim_node + policy_node from a launch file (sim_policy.launch.yaml) with
the launcher `vmerpo launch` uses, in lockstep, and drives every episode from a node in this
process:

    sim_node params task_id, seed  ->  policy_node ~/enable true (resets its latent state)
    ->  sim_node ~/reset (publishes the first frame)  ->  count the reliable `reward` and
    `success` messages until max_episode_steps steps  ->  policy_node ~/enable false

Success, return, length and steps to success come from those topics, and are checked
against the simulator's own account of the episode (the JSON answer of its next `~/reset`);
a difference means a lost message and is an error, never a silently different result.
Episodes and seeds are the ones `vmerpo eval` uses (`sim.evaluate.episode_seed`), so the
output has the same shape as `sim.evaluate.evaluate`'s and the two compare per episode.

A lockstep run is deterministic: the same pixels (the one preprocessing function), the same
runtime and the same limiter settings (config/policy_node_sim.yaml) as direct evaluation.
Two things would break that and are set here: the policy's watchdog, which in lockstep
measures this computer's load rather than the robot's (`obs_timeout_s` is raised), and
frames sim_node starts on its own (`start_episode:=false`).

No torch and no MuJoCo here (the simulator runs in sim_node's process); rclpy is imported
only after the SHM-only DDS configuration is in place.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robot_nodes.launcher import Launcher, LaunchError, NodeProcess, load_launch_file
from robot_nodes.netsafe import ensure_safe_before_rclpy, inet_sockets_of_this_process
from sim.evaluate import EpisodeResult, episode_seed, summarize

DEFAULT_LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "sim_policy.launch.yaml"


class RosEvalError(RuntimeError):
    """The ROS evaluation could not finish (a node died, an episode timed out, a message was
    lost): one line that says which."""


@contextmanager
def ros_session(name: str, namespace: str = "") -> Iterator[Any]:
    """A node in its own context, spun by a SingleThreadedExecutor in a daemon thread
    (robot_nodes.testing.ros_context says why not the multi-threaded one);
    teardown never hangs (docs/environment.md, the in-process pattern)."""
    ensure_safe_before_rclpy()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    ctx = rclpy.Context()
    # No rclpy signal handler: Ctrl-C stays a KeyboardInterrupt in the caller's thread.
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(name, namespace=namespace, context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=2.0)
        rclpy.try_shutdown(context=ctx)


class EpisodeDriver:
    """Runs lockstep episodes of a sim_node driven by a policy_node, from `node` (spun by
    another thread). `check()` is called while waiting and raises if a node died."""

    def __init__(self, node: Any, sim: str = "sim_node", policy: str = "policy_node",
                 check: Callable[[], None] = lambda: None) -> None:
        from std_msgs.msg import Bool, Float64

        self.node, self.sim, self.policy, self.check = node, sim, policy, check
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._rewards: list[float] = []
        self._successes: list[bool] = []
        self._last: EpisodeResult | None = None  # waiting for the simulator's own account
        node.create_subscription(Float64, "reward", self._on_reward, 1000)
        node.create_subscription(Bool, "success", self._on_success, 1000)

    def _on_reward(self, msg: Any) -> None:
        with self._lock:
            self._rewards.append(float(msg.data))

    def _on_success(self, msg: Any) -> None:
        with self._lock:
            self._successes.append(bool(msg.data))

    # -- plumbing --------------------------------------------------------------------------
    def _wait(self, predicate: Callable[[], bool], timeout_s: float,
              what: str | Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            self.check()
            if time.monotonic() > deadline:
                raise RosEvalError(f"{what if isinstance(what, str) else what()} (waited {timeout_s:g} s)")
            time.sleep(0.01)

    def _call(self, srv_type: Any, name: str, request: Any = None, timeout_s: float = 30.0) -> Any:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.node.create_client(srv_type, name)
        self._wait(client.service_is_ready, timeout_s, f"service {name} is not available")
        done = threading.Event()
        future = client.call_async(request if request is not None else srv_type.Request())
        future.add_done_callback(lambda _: done.set())
        self._wait(done.is_set, timeout_s, f"service {name} did not answer")
        return future.result()

    def _set_sim_parameters(self, **values: int) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        req = SetParameters.Request(parameters=[
            Parameter(name=k, value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(v)))
            for k, v in values.items()])
        for p, r in zip(req.parameters, self._call(SetParameters, f"{self.sim}/set_parameters", req).results,
                        strict=True):
            if not r.successful:
                raise RosEvalError(f"{self.sim} refused parameter {p.name}: {r.reason}")

    def sim_parameters(self, *names: str) -> dict[str, Any]:
        """The simulator's actual parameters (what the launch file made of our arguments)."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        res = self._call(GetParameters, f"{self.sim}/get_parameters", GetParameters.Request(names=list(names)))
        return {n: parameter_value_to_python(v) for n, v in zip(names, res.values, strict=True)}

    def _enable(self, on: bool) -> None:
        from std_srvs.srv import SetBool

        res = self._call(SetBool, f"{self.policy}/enable", SetBool.Request(data=on))
        if not res.success:
            raise RosEvalError(f"{self.policy}/enable {str(on).lower()}: {res.message}")

    def _reset_sim(self) -> dict[str, Any]:
        from std_srvs.srv import Trigger

        res = self._call(Trigger, f"{self.sim}/reset")
        if not res.success:
            raise RosEvalError(f"{self.sim}/reset: {res.message}")
        return json.loads(res.message)

    # -- episodes --------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float) -> None:
        """Both nodes up and matched: services answer, the command and reward topics connect."""
        n = self.node
        self._wait(lambda: (n.count_publishers("reward") > 0 and n.count_publishers("command") > 0
                            and n.count_subscribers("command") > 0 and n.count_subscribers("image") > 0),
                   timeout_s, f"{self.sim} and {self.policy} did not come up")
        self._enable(False)  # also proves policy_node is configured and active

    def run_episode(self, task_id: int, seed: int, max_steps: int, timeout_s: float,
                    episode_index: int = 0) -> EpisodeResult:
        """One episode of `task_id`; returns its result read from the reward/success topics."""
        self._set_sim_parameters(task_id=task_id, seed=seed)
        with self._lock:
            self._rewards.clear()
            self._successes.clear()
        self._enable(True)  # before the first frame: enabling resets the latent state
        answer = self._reset_sim()
        self._cross_check(answer["finished"])
        started = answer["started"]
        if started["task_id"] != task_id or started.get("seed", seed) != seed:
            raise RosEvalError(f"{self.sim} started task {started['task_id']} seed {started.get('seed')}, "
                               f"asked for task {task_id} seed {seed}")
        try:
            self._wait(lambda: len(self._rewards) >= max_steps and len(self._successes) >= max_steps,
                       timeout_s, lambda: f"episode {episode_index} of task {task_id} timed out at "
                       f"{len(self._rewards)}/{max_steps} steps")
        finally:
            self._enable(False)
        with self._lock:
            rewards, successes = list(self._rewards), list(self._successes)
        if len(rewards) != max_steps or len(successes) != max_steps:
            raise RosEvalError(f"episode {episode_index} of task {task_id}: {len(rewards)} reward and "
                               f"{len(successes)} success messages for {max_steps} steps")
        first = next((t + 1 for t, s in enumerate(successes) if s), None)
        self._last = EpisodeResult(task_id, episode_index, seed, first is not None, float(sum(rewards)),
                                   len(rewards), first)
        return self._last

    def finish(self) -> None:
        """Check the last episode against the simulator's account (starts an idle episode)."""
        if self._last is not None:
            self._cross_check(self._reset_sim()["finished"])

    def _cross_check(self, finished: Mapping[str, Any] | None) -> None:
        r, self._last = self._last, None
        if r is None:
            return
        ours = {"task_id": r.task_id, "success": r.success, "length": r.length,
                "steps_to_success": r.steps_to_success, "return": r.episode_return}
        same = finished is not None and all(finished[k] == v for k, v in ours.items() if k != "return") \
            and abs(finished["return"] - r.episode_return) <= 1e-9 * max(1.0, abs(r.episode_return))
        if not same:
            raise RosEvalError(f"topics and {self.sim} disagree on episode {r.episode_index} of task "
                               f"{r.task_id} (lost messages?): topics {ours}, simulator {finished}")


# -- the whole evaluation -------------------------------------------------------------------
@dataclass
class _Nodes:
    sim: NodeProcess
    policy: NodeProcess
    namespace: str


def _find_nodes(nodes: Sequence[NodeProcess], launch_file: Path) -> _Nodes:
    by_exec: dict[str, NodeProcess] = {}
    for n in nodes:
        if n.exec in ("sim_node", "policy_node"):
            if n.exec in by_exec:
                raise LaunchError(f"{launch_file}: starts more than one {n.exec}")
            by_exec[n.exec] = n
    missing = {"sim_node", "policy_node"} - set(by_exec)
    if missing:
        raise LaunchError(f"{launch_file}: starts no {' and no '.join(sorted(missing))}; "
                          "ros-eval needs a sim_node driven by a policy_node")

    def namespace(n: NodeProcess) -> str:
        return next((a.split(":=", 1)[1] for a in n.ros_args if a.startswith("__ns:=")), "")

    sim, policy = by_exec["sim_node"], by_exec["policy_node"]
    if namespace(sim) != namespace(policy):
        raise LaunchError(f"{launch_file}: sim_node and policy_node are in different namespaces")
    return _Nodes(sim, policy, namespace(sim))


def ros_evaluate(
    policy: str | os.PathLike,
    family: str,
    tasks: Sequence[int],
    episodes: int,
    seed: int = 0,
    *,
    launch_file: str | os.PathLike = DEFAULT_LAUNCH,
    image_size: int = 64,
    max_episode_steps: int = 150,
    hand_init_noise: float = 0.0,
    goal_pin: bool = False,
    obs_timeout_s: float = 10.0,
    timeout_s: float = 120.0,
    startup_timeout_s: float = 120.0,
    log: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """`episodes` lockstep episodes of each task in `tasks` through sim_node + policy_node.

    Returns `sim.evaluate.evaluate`'s dict (plus `launch_file`, `log` and `path: "ros"`);
    the nodes are stopped on return, on errors and on KeyboardInterrupt. Raises
    RosEvalError (a node died, an episode took longer than `timeout_s`, a message was
    lost) and LaunchError (a launch file or argument it cannot honour)."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    tasks = [int(t) for t in tasks]
    if not tasks:
        raise ValueError("no tasks to evaluate")
    if not Path(policy).is_file():
        raise FileNotFoundError(f"policy {policy}: no such file")
    from learning.runtime.policy_runtime import read_spec
    from sim.envs import check_policy_goal_pin

    check_policy_goal_pin(read_spec(policy).env, goal_pin)
    launch_file = Path(launch_file)
    args = {"policy": str(Path(policy).resolve()), "family": family, "image_size": str(image_size),
            "max_episode_steps": str(max_episode_steps), "hand_init_noise_m": repr(float(hand_init_noise)),
            "lockstep": "true",
            "start_episode": "false", "obs_timeout_s": str(obs_timeout_s)}
    if goal_pin:  # passed only when asked: launch files written before the option need not declare it
        args["goal_pin"] = "true"
    nodes = load_launch_file(launch_file, args)
    found = _find_nodes(nodes, launch_file)
    ensure_safe_before_rclpy()  # the children inherit this process's domain id
    log_path = Path(log) if log is not None else Path(tempfile.mkdtemp(prefix="vmerpo-ros-eval-")) / "nodes.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "a")  # noqa: SIM115 (closed in finally); appends: never overwrites
    log_file.write(f"# ros-eval {time.strftime('%Y-%m-%d %H:%M:%S')}: {policy} on {family} tasks {tasks}\n")
    write_lock = threading.Lock()

    def out(line: str) -> None:
        with write_lock:
            if not log_file.closed:
                log_file.write(line + "\n")
                log_file.flush()

    launcher = Launcher(nodes, out=out)
    start = time.perf_counter()

    def check() -> None:
        for n, p in zip(launcher.nodes, launcher.procs, strict=True):
            rc = p.poll()
            if rc is not None:
                raise RosEvalError(f"node {n.name} exited with code {rc} (log: {log_path})")

    results: list[EpisodeResult] = []
    try:
        launcher.start()
        with ros_session("ros_eval_driver", found.namespace) as node:
            sockets = inet_sockets_of_this_process()
            if sockets:
                raise RosEvalError(f"the ROS middleware opened IP sockets {sockets}: unsafe network "
                                   "configuration (see robot_nodes/netsafe.py)")
            driver = EpisodeDriver(node, found.sim.name, found.policy.name, check)
            driver.wait_ready(startup_timeout_s)
            actual = driver.sim_parameters("family", "image_size", "max_episode_steps", "lockstep",
                                           "action_repeat", "hand_init_noise_m", "goal_pin")
            wanted = {"family": family, "image_size": image_size, "max_episode_steps": max_episode_steps,
                      "lockstep": True, "hand_init_noise_m": float(hand_init_noise), "goal_pin": bool(goal_pin)}
            differ = {k: (actual[k], v) for k, v in wanted.items() if actual[k] != v}
            if differ:
                raise LaunchError(f"{launch_file}: sim_node runs with {differ} (actual, asked)")
            total = len(tasks) * episodes
            for task_id in tasks:
                for k in range(episodes):
                    results.append(driver.run_episode(task_id, episode_seed(seed, task_id, k),
                                                      max_episode_steps, timeout_s, k))
                    if progress is not None:
                        progress(len(results), total)
            driver.finish()
            check()
    except RosEvalError as e:
        raise RosEvalError(str(e) if "(log:" in str(e) else f"{e} (log: {log_path})") from None
    finally:
        launcher.stop()
        with write_lock:
            log_file.close()
    out_ = summarize(results)
    out_.update({"env": family, "tasks": tasks, "episodes_per_task": episodes, "seed": seed,
                 "hand_init_noise": float(hand_init_noise), "goal_pin": bool(goal_pin), "image_size": image_size, "max_episode_steps": max_episode_steps,
                 "action_repeat": int(actual["action_repeat"]), "wall_s": round(time.perf_counter() - start, 3),
                 # policy_node's limiter also counts the frames after an episode's end: not comparable
                 "limiter": None, "path": "ros", "launch_file": str(launch_file), "log": str(log_path)})
    return out_
