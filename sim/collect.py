"""Data collection: behaviour policies -> episodes -> one zarr store.

Worker processes each own a Meta-World environment and run whole episodes; the parent is
the only writer. Each episode's seed is a function of (seed, task id, episode index) and
the writer commits episodes in job order, so 1 and 2 workers give identical stores. A store
is always consistent: an interrupted collection (Ctrl-C, SIGKILL) keeps every committed
episode, and `resume=True` runs only the (task, episode index) pairs the store lacks.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Fields of a collection that must match to continue it with --resume.
RESUME_KEYS = ("family", "quality", "seed", "image_size", "max_episode_steps", "action_repeat",
               "hand_init_noise", "goal_pin", "aim")
RESUME_DEFAULTS = {"hand_init_noise": 0.0, "goal_pin": False, "aim": None}  # what stores written before a key existed were collected with


@dataclass
class CollectConfig:
    family: str
    out: str
    tasks: list[int]
    episodes_per_task: int = 5
    quality: str = "medium"
    image_size: int = 64
    max_episode_steps: int = 150
    action_repeat: int = 1
    seed: int = 0
    hand_init_noise: float = 0.0  # m; hand start offset per episode (sim.envs), 0 = Meta-World's fixed start
    goal_pin: bool = False  # draw a pin under the goal marker (sim.envs: makes the goal's 3-D position visible)
    aim: bool | None = None  # expert aimed at the tool centre (sim.policies); None: the family's default
    workers: int = 2  # 0 runs episodes in this process (debugging)
    overwrite: bool = False
    resume: bool = False
    zarr_format: int = 2
    jobs: list[tuple[int, int]] = field(default_factory=list)  # filled in: (task, episode)

    def job_list(self) -> list[tuple[int, int]]:
        return [(t, k) for t in self.tasks for k in range(self.episodes_per_task)]


def check_config(cfg: CollectConfig) -> None:
    from sim.envs import (
        check_family,
        check_goal_pin,
        check_hand_init_noise,
        check_image_size,
        task_set,
    )
    from sim.policies import QUALITIES

    check_family(cfg.family)
    check_image_size(cfg.image_size)
    check_hand_init_noise(cfg.hand_init_noise)
    check_goal_pin(cfg.family, cfg.goal_pin)
    if cfg.quality not in QUALITIES:
        raise ValueError(f"unknown quality {cfg.quality!r}; choose one of {', '.join(QUALITIES)}")
    if cfg.episodes_per_task < 1:
        raise ValueError(f"--episodes-per-task must be at least 1, got {cfg.episodes_per_task}")
    if cfg.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {cfg.workers}")
    if cfg.max_episode_steps < 1 or cfg.action_repeat < 1:
        raise ValueError("--max-episode-steps and --action-repeat must be at least 1")
    ts = task_set(cfg.family)
    for t in cfg.tasks:
        ts.check_id(t)
    if not cfg.tasks:
        raise ValueError("no tasks to collect")
    if cfg.overwrite and cfg.resume:
        raise ValueError("--overwrite and --resume exclude each other")
    if Path(cfg.out).exists() and not (cfg.overwrite or cfg.resume):
        raise FileExistsError(f"{cfg.out} exists; pass --overwrite to replace it or --resume "
                              "to continue it")


def _collection_attrs(cfg: CollectConfig) -> dict[str, Any]:
    from sim.policies import behavior_config

    return {
        "collection": {"family": cfg.family, "quality": cfg.quality, "seed": cfg.seed,
                       "image_size": cfg.image_size, "max_episode_steps": cfg.max_episode_steps,
                       "action_repeat": cfg.action_repeat, "hand_init_noise": cfg.hand_init_noise,
                       "goal_pin": cfg.goal_pin, "aim": cfg.aim, "tasks": list(cfg.tasks),
                       "episodes_per_task": cfg.episodes_per_task,
                       "episode_seed": "SeedSequence([seed, task_id, episode_index])"},
        "behavior_policies": behavior_config(cfg.family, cfg.aim),
    }


class _EpisodeRunner:
    """What a worker owns: one environment, one behaviour policy, one safety limiter."""

    def __init__(self, cfg: dict[str, Any], tasks: Any) -> None:
        from sim.envs import make_env
        from sim.policies import make_behavior_policy

        self.cfg = cfg
        self.env = make_env(cfg["family"], cfg["image_size"], cfg["max_episode_steps"],
                            cfg["action_repeat"], tasks, cfg["hand_init_noise"], cfg["goal_pin"])
        self.policy = make_behavior_policy(cfg["quality"], self.env, cfg.get("aim"))
        self.limiter = self.env.safety_limiter()

    def run(self, task_id: int, k: int) -> tuple[bool, dict[str, np.ndarray], dict[str, Any]]:
        from sim.evaluate import episode_seed, run_episode
        from sim.policies import describe

        seed = episode_seed(self.cfg["seed"], task_id, k)
        r = run_episode(self.env, self.policy, self.limiter, task_id, seed, k, record=True)
        assert r.data is not None  # record=True
        provenance = {**describe(self.policy), "collection_quality": self.cfg["quality"],
                      "seed": seed, "episode_index": k}
        return r.success, r.data, provenance

    def close(self) -> None:
        self.env.close()


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the writer process dies (e.g. is SIGKILLed)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the getppid() check below still works
        pass


def _worker(wid: int, cfg: dict[str, Any], tasks: Any, jobs: Any, results: Any,
            parent: int) -> None:
    # Ctrl-C reaches the whole process group: the parent decides, workers keep quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        runner = _EpisodeRunner(cfg, tasks)
        results.put(("ready", wid, None))
        while True:
            if os.getppid() != parent:  # the writer was killed: nobody reads our results
                results.cancel_join_thread()
                os._exit(0)
            job = jobs.get()
            if job is None:
                break
            j, task_id, k = job
            success, data, provenance = runner.run(task_id, k)
            results.put(("episode", wid, (j, task_id, success, data, provenance)))
            results.put(("cpu", wid, _cpu_seconds()))
        runner.close()
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put(("error", wid, traceback.format_exc()))


def collect(
    cfg: CollectConfig,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the collection described by `cfg`; returns a summary (frames/s, counts)."""
    from learning.store import EpisodeStore, EpisodeWriter
    from sim.envs import make_env, task_set

    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_config(cfg)
    tasks = task_set(cfg.family)
    probe = make_env(cfg.family, cfg.image_size, cfg.max_episode_steps, cfg.action_repeat, tasks,
                     cfg.hand_init_noise, cfg.goal_pin)
    spec = probe.store_spec(_collection_attrs(cfg))
    probe._mw.close()  # no renderer was made: nothing else to free

    done: set[tuple[int, int]] = set()
    if cfg.resume and Path(cfg.out).exists():
        _check_resume(cfg, spec)
        writer = EpisodeWriter(cfg.out, spec=spec, mode="a", zarr_format=cfg.zarr_format, log=log)
        if writer.n_episodes:
            store = EpisodeStore.open(cfg.out, load="lazy")
            done = set(zip(store.episode_task.tolist(),
                           store.provenance("episode_index").tolist(), strict=True))
    else:
        writer = EpisodeWriter(cfg.out, spec=spec, mode="w", overwrite=cfg.overwrite,
                               zarr_format=cfg.zarr_format, log=log)
    todo = [(t, k) for t, k in cfg.job_list() if (t, k) not in done]
    frames_per_episode = cfg.max_episode_steps
    total_frames = len(cfg.job_list()) * frames_per_episode
    summary = {"out": cfg.out, "family": cfg.family, "quality": cfg.quality,
               "episodes_planned": len(cfg.job_list()), "episodes_skipped": len(done),
               "workers": cfg.workers, "image_size": cfg.image_size}
    bar = _progress_bar(progress, total_frames, len(done) * frames_per_episode,
                        f"collect {cfg.family} {cfg.quality}")
    t0 = time.perf_counter()
    written = frames = 0
    successes = 0
    try:
        with writer:
            worker_cpu: dict[int, float] = {}
            cpu0 = _cpu_seconds()
            stream = _run_inprocess(cfg, tasks, todo) if cfg.workers == 0 else \
                _run_workers(cfg, tasks, todo, worker_cpu)
            t_ready = None
            for event, payload in stream:
                if event == "ready":
                    t_ready = time.perf_counter()
                    continue
                task_id, success, data, provenance = payload
                writer.add_episode(data, task_id=task_id, success=success, provenance=provenance)
                written += 1
                frames += len(data["image"])
                successes += int(success)
                if bar is not None:
                    bar.update(len(data["image"]))
                    bar.set_postfix(episodes=f"{written + len(done)}/{len(cfg.job_list())}",
                                    success=f"{successes / written:.2f}")
    except KeyboardInterrupt:
        log(f"interrupted: {cfg.out} keeps {len(done) + written} committed episodes; "
            "continue with --resume")
        raise
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    steady = time.perf_counter() - (t_ready or t0)
    summary.update({
        "episodes_written": written, "frames_written": frames,
        "success_rate_written": successes / written if written else None,
        "wall_s": round(wall, 3), "startup_s": round((t_ready or t0) - t0, 3),
        "frames_per_s": round(frames / wall, 2) if wall > 0 else None,
        "frames_per_s_steady": round(frames / steady, 2) if steady > 0 else None,
        # CPU cost per frame (start-up included), independent of other load on the machine
        "worker_cpu_ms_per_frame": round(1000 * sum(worker_cpu.values()) / frames, 3)
        if frames and worker_cpu else None,
        "writer_cpu_ms_per_frame": round(1000 * (_cpu_seconds() - cpu0) / frames, 3)
        if frames else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    })
    return summary


def _check_resume(cfg: CollectConfig, spec: Any) -> None:
    from learning.store import EpisodeStore

    stored = EpisodeStore.open(cfg.out, load="lazy").spec
    old = stored.env.get("collection", {})
    new = _collection_attrs(cfg)["collection"]
    for key in RESUME_KEYS:
        was = old.get(key, RESUME_DEFAULTS.get(key))
        if was != new[key]:
            raise ValueError(f"--resume: {cfg.out} was collected with {key}={was!r}, "
                             f"this run asks for {new[key]!r}")


def _run_inprocess(cfg: CollectConfig, tasks: Any, todo: list[tuple[int, int]]):
    runner = _EpisodeRunner(asdict(cfg), tasks)
    try:
        yield "ready", None
        for task_id, k in todo:
            success, data, provenance = runner.run(task_id, k)
            yield "episode", (task_id, success, data, provenance)
    finally:
        runner.close()


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run_workers(cfg: CollectConfig, tasks: Any, todo: list[tuple[int, int]],
                 cpu_out: dict[int, float] | None = None):
    """Yield finished episodes in job order from `cfg.workers` processes."""
    ctx = mp.get_context("spawn")  # no inherited zarr/EGL threads or locks
    jobs, results = ctx.Queue(), ctx.Queue()
    n_workers = max(1, min(cfg.workers, len(todo)))
    for j, (task_id, k) in enumerate(todo):
        jobs.put((j, task_id, k))
    for _ in range(n_workers):
        jobs.put(None)
    cfg_dict = asdict(cfg)
    procs = [ctx.Process(target=_worker, args=(w, cfg_dict, tasks, jobs, results, os.getpid()),
                         daemon=True, name=f"vmerpo-collect-{w}") for w in range(n_workers)]
    # Each worker renders on exactly one core (see sim/envs.py); spawn copies the environment.
    saved = os.environ.get("LP_NUM_THREADS")
    os.environ.setdefault("LP_NUM_THREADS", "0")
    try:
        for p in procs:
            p.start()
    finally:
        if saved is None:
            os.environ.pop("LP_NUM_THREADS", None)
    try:
        pending: dict[int, tuple] = {}
        worker_cpu = cpu_out if cpu_out is not None else {}
        next_j, ready = 0, 0
        while next_j < len(todo):
            try:
                event, wid, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode != 0]
                if dead:
                    raise RuntimeError(f"collection worker {dead[0].name} died "
                                       f"(exit code {dead[0].exitcode})") from None
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError(f"collection workers exited with {len(todo) - next_j} "
                                       "episodes missing") from None
                continue
            if event == "error":
                raise RuntimeError(f"collection worker {wid} failed:\n{payload}")
            if event == "cpu":
                worker_cpu[wid] = payload
                continue
            if event == "ready":
                ready += 1
                if ready == n_workers:
                    yield "ready", None
                continue
            j, *episode = payload
            pending[j] = tuple(episode)
            while next_j in pending:  # commit in job order: identical stores for any -j
                yield "episode", pending.pop(next_j)
                next_j += 1
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
        jobs.cancel_join_thread()
        results.cancel_join_thread()


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="frame", desc=desc, dynamic_ncols=True,
                smoothing=0.1, file=sys.stderr)
