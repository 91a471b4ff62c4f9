"""The one closed-loop evaluation harness, and the episode loop it shares
with data collection.

`policy` is anything with `reset()` and `act(observation) -> action`: scripted policies, a
trained run, the ONNX runtime. Every action goes through the project's one safety limiter
(`learning.runtime.safety.SafetyLimiter`) before it is applied, and the applied action is
what the policy is told it did (`policy.set_applied_action(applied)` when it has that
method): the same code path as the ROS policy node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def episode_seed(seed: int, task_id: int, episode_index: int) -> int:
    """Seed of one episode: a function of (seed, task, episode index), never of the worker."""
    return int(np.random.SeedSequence([int(seed), int(task_id), int(episode_index)]).generate_state(1)[0])


@dataclass
class EpisodeResult:
    task_id: int
    episode_index: int
    seed: int
    success: bool
    episode_return: float
    length: int
    steps_to_success: int | None
    data: dict[str, np.ndarray] | None = None  # contract-1 arrays when recorded
    frames: list[np.ndarray] = field(default_factory=list)  # for videos
    limiter: dict[str, int] = field(default_factory=dict)
    final_distance: float | None = None  # tool centre to goal at the end (m), where the env has a goal
    min_distance: float | None = None  # and its closest approach over the episode


class EpisodeLoop:
    """One episode's act -> limit -> apply loop, stepped from outside: `run_episode` runs one to
    its end, `evaluate_lockstep` runs several side by side so that their policy is asked once
    per step for all of them. Construction resets the env (and the policy, when given)."""

    def __init__(self, env: Any, policy: Any, limiter: Any, task_id: int, seed: int, episode_index: int = 0,
                 record: bool = False, keep_frames: bool = False) -> None:
        self.env, self.policy, self.limiter = env, policy, limiter
        self.task_id, self.seed, self.episode_index = task_id, seed, episode_index
        self.record, self.keep_frames = record, keep_frames
        env.set_task(task_id)
        if policy is not None and hasattr(policy, "seed"):
            policy.seed(seed)
        self.obs = env.reset(seed=seed)  # the seed draws the start when the env randomizes it
        if policy is not None:
            policy.reset()
        limiter.reset()
        self._stats0 = limiter.stats.as_dict()
        self.rows: dict[str, list] = {k: [] for k in ("image", "state", "action", "reward", "terminal",
                                                      "timestamp")}
        self.total, self.success, self.t = 0.0, False, 0
        self.first_success: int | None = None
        self.frames = [self.obs["image"]] if keep_frames else []
        self._measure = hasattr(env, "goal_distance")
        self.distance = env.goal_distance() if self._measure else None
        self.closest = self.distance
        self.done = False

    def apply(self, proposed: Any) -> bool:
        """Limit and apply the policy's proposed action; returns whether the episode ended."""
        env, limiter, rows = self.env, self.limiter, self.rows
        applied = limiter.limit(proposed, env.ee_position() if limiter.needs_ee_position else None)
        if self.policy is not None and hasattr(self.policy, "set_applied_action"):
            self.policy.set_applied_action(applied)
        if self.record:
            if "image" in self.obs:  # state-only environments (render=False) record no images
                rows["image"].append(self.obs["image"])
            rows["state"].append(self.obs["state"])
            rows["action"].append(applied)
            rows["timestamp"].append(self.t * env.control_dt)
        self.obs, reward, terminated, truncated, info = env.step(applied)
        self.t += 1
        self.total += reward
        if self._measure:
            self.distance = env.goal_distance()
            self.closest = min(self.closest, self.distance)
        if info.get("success") and not self.success:
            self.success, self.first_success = True, self.t
        if self.record:
            rows["reward"].append(reward)
            rows["terminal"].append(terminated)
        if self.keep_frames:
            self.frames.append(self.obs["image"])
        self.done = bool(terminated or truncated)
        return self.done

    def result(self) -> EpisodeResult:
        rows = self.rows
        data: dict[str, np.ndarray] | None = None
        if self.record:
            data = {
                "state": np.stack(rows["state"]).astype(np.float32),
                "action": np.stack(rows["action"]).astype(np.float32),
                "reward": np.asarray(rows["reward"], dtype=np.float32),
                "terminal": np.asarray(rows["terminal"], dtype=bool),
                "timestamp": np.asarray(rows["timestamp"], dtype=np.float64),
            }
            if rows["image"]:
                data["image"] = np.stack(rows["image"]).astype(np.uint8)
        stats = {k: v - self._stats0[k] for k, v in self.limiter.stats.as_dict().items()}
        return EpisodeResult(self.task_id, self.episode_index, self.seed, self.success, self.total, self.t,
                             self.first_success, data, self.frames, stats, self.distance, self.closest)


def run_episode(
    env: Any,
    policy: Any,
    limiter: Any,
    task_id: int,
    seed: int,
    episode_index: int = 0,
    record: bool = False,
    keep_frames: bool = False,
) -> EpisodeResult:
    """One episode: reset, then act -> limit -> apply until the episode cap."""
    loop = EpisodeLoop(env, policy, limiter, task_id, seed, episode_index, record, keep_frames)
    while not loop.apply(policy.act(loop.obs)):
        pass
    return loop.result()


def evaluate(
    policy: Any,
    env: Any,
    tasks: Sequence[int],
    episodes: int,
    seed: int = 0,
    video: str | None = None,
    video_episodes: int = 4,
    limiter: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Closed-loop evaluation: `episodes` episodes on each task in `tasks`.

    Returns success rate, mean return and mean episode length per task and overall (plus
    mean steps to first success, how often the safety limiter acted, and each episode's
    result under `episode_results` for per-episode comparisons). With `video`, the
    first `video_episodes` episodes are written side by side in time to that path (.mp4/.gif).
    """
    tasks = _checked_tasks(env, tasks, episodes)
    limiter = limiter if limiter is not None else env.safety_limiter()
    results: list[EpisodeResult] = []
    clips: list[list[np.ndarray]] = []
    start = time.perf_counter()
    total = len(tasks) * episodes
    for task_id in tasks:
        for k in range(episodes):
            keep = video is not None and len(clips) < video_episodes
            r = run_episode(env, policy, limiter, task_id, episode_seed(seed, task_id, k), k,
                            keep_frames=keep)
            if keep:
                clips.append(r.frames)
                r.frames = []
            results.append(r)
            if progress is not None:
                progress(len(results), total)
    out = _summary(results, env, tasks, episodes, seed, start)
    if video is not None:
        write_video(video, clips, fps=min(30.0, env.control_hz))
        out["video"] = video
    return out


def _checked_tasks(env: Any, tasks: Sequence[int], episodes: int) -> list[int]:
    """The tasks to evaluate as ints, after the episode count and every task id are checked."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    out = [int(t) for t in tasks]
    if not out:
        raise ValueError("no tasks to evaluate")
    for t in out:
        env.tasks.check_id(t)
    return out


def _summary(results: Sequence[EpisodeResult], env: Any, tasks: list[int], episodes: int, seed: int,
             start: float) -> dict[str, Any]:
    out = summarize(results)
    out.update({"env": env.family, "tasks": tasks, "episodes_per_task": episodes, "seed": seed,
                "hand_init_noise": getattr(env, "hand_init_noise", 0.0), "image_size": env.image_size,
                "max_episode_steps": env.max_episode_steps,
                "action_repeat": env.action_repeat,
                "wall_s": round(time.perf_counter() - start, 3)})
    return out


def evaluate_lockstep(act_batch: Callable[[list[dict[str, np.ndarray]]], np.ndarray], envs: Sequence[Any],
                      tasks: Sequence[int], episodes: int, seed: int = 0) -> dict[str, Any]:
    """`evaluate` for a stateless deterministic policy given as `act_batch(observations) ->
    actions` (one row per observation): the same episodes (seeds, starts, order, limiter,
    result fields), run len(envs) at a time side by side, so the policy is asked once per step
    for all of them (a batched forward pass instead of one per episode and step). A network's
    batched pass may round differently from its one-row pass (CPU torch: ~1e-7), so actions are
    equal up to that rounding. The policy is not seeded, reset or told the applied action.
    `envs` are alike environments (same family and settings), each with its own safety limiter."""
    if not envs:
        raise ValueError("evaluate_lockstep needs at least one environment")
    tasks = _checked_tasks(envs[0], tasks, episodes)
    start = time.perf_counter()
    todo = [(t, k) for t in tasks for k in range(episodes)]
    results: list[EpisodeResult] = []
    for i in range(0, len(todo), len(envs)):
        loops = [EpisodeLoop(env, None, env.safety_limiter(), t, episode_seed(seed, t, k), k)
                 for env, (t, k) in zip(envs, todo[i:i + len(envs)], strict=False)]
        live = loops
        while live:
            actions = np.asarray(act_batch([lp.obs for lp in live]))
            if actions.shape[0] != len(live):
                raise ValueError(f"act_batch returned {actions.shape[0]} actions for {len(live)} observations")
            live = [lp for lp, a in zip(live, actions, strict=True) if not lp.apply(a)]
        results += [lp.result() for lp in loops]
    return _summary(results, envs[0], tasks, episodes, seed, start)


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    def stats(rs: Sequence[EpisodeResult]) -> dict[str, Any]:
        to_success = [r.steps_to_success for r in rs if r.steps_to_success is not None]
        return {
            "episodes": len(rs),
            "success_rate": float(np.mean([r.success for r in rs])),
            "mean_return": float(np.mean([r.episode_return for r in rs])),
            "mean_length": float(np.mean([r.length for r in rs])),
            "mean_steps_to_success": float(np.mean(to_success)) if to_success else None,
            **({"mean_final_distance": float(np.mean([r.final_distance for r in rs])),
                "mean_min_distance": float(np.mean([r.min_distance for r in rs]))}
               if rs and all(r.final_distance is not None for r in rs) else {}),
        }

    per_task: dict[str, Any] = {}
    for task_id in dict.fromkeys(r.task_id for r in results):
        per_task[str(task_id)] = stats([r for r in results if r.task_id == task_id])
    limiter = {k: int(sum(r.limiter.get(k, 0) for r in results))
               for k in ("actions", "invalid", "clipped", "rate_limited", "workspace_limited")}
    episodes = [{"task_id": r.task_id, "episode_index": r.episode_index, "seed": r.seed,
                 "success": bool(r.success), "return": float(r.episode_return), "length": r.length,
                 "steps_to_success": r.steps_to_success, "final_distance": r.final_distance,
                 "min_distance": r.min_distance} for r in results]
    return {**stats(results), "per_task": per_task, "limiter": limiter, "episode_results": episodes}


def write_video(path: str, clips: Sequence[Sequence[np.ndarray]], fps: float = 30.0) -> None:
    """Episodes side by side (shorter ones hold their last frame); mp4 or gif by suffix."""
    import imageio.v2 as imageio

    if not clips:
        raise ValueError("no frames to write")
    n = max(len(c) for c in clips)
    frames = []
    for t in range(n):
        frames.append(np.concatenate([c[min(t, len(c) - 1)] for c in clips], axis=1))
    if str(path).endswith(".gif"):
        imageio.mimsave(path, frames, duration=1.0 / fps)  # type: ignore[arg-type]
        return
    try:
        writer = imageio.get_writer(path, fps=fps, macro_block_size=1)
    except Exception as e:  # imageio-ffmpeg missing: fall back to OpenCV
        import cv2

        h, w = frames[0].shape[:2]
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
        if not vw.isOpened():
            raise OSError(f"cannot write video {path}: {e}") from None
        for f in frames:
            vw.write(f[:, :, ::-1])
        vw.release()
        return
    with writer:
        for f in frames:
            writer.append_data(f)
