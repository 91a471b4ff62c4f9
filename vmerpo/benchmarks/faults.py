"""Fault-injection suite: kill, corrupt and attack every part that holds state.

    vmerpo bench faults --out results/faults.json            # full counts (~15 min, 2 cores)
    vmerpo bench faults --quick --out /tmp/faults.json       # reduced counts (the slow test)
    vmerpo bench faults --only corruption,ros                # some sections
    vmerpo bench faults --table results/faults.json          # its store-damage table (Markdown)

Sections (each a subprocess from the outside, as a crash would hit a user):

  training   `vmerpo train-model --config tiny` and `vmerpo train` (world model + latents +
             MerPO) SIGKILLed after new checkpoints and at blind moments, resumed with --resume
             each time; the final parameters and metrics must equal an uninterrupted run's
             within TRAIN_TOLERANCE (resume is designed to be bit-exact: every step's batch and
             noise are functions of (seed, step), checkpoints hold optimizer and RNG state).
  collection `vmerpo collect` SIGKILLed at random moments (>= 20 trials), alternately with 0
             and 1 worker processes: every episode a reader saw committed before the kill is
             still there and identical to an uninterrupted collection's, the store always
             opens, no worker outlives its writer, and `--resume` completes the same store.
  recording  recorder_node SIGKILLed mid-episode, during the end_episode commit or between
             episodes (>= 20 trials): every episode whose commit was acknowledged survives,
             unchanged and aligned (image, state and command of the same tick).
  corruption damaged stores (truncated/garbled/missing chunks, missing arrays, bad attrs,
             wrong dtype, NaN, length mismatch; and untrusted ones: 1e12 declared rows, rows
             past the commit beyond the leftover bound, a damaged last commit entry, oversized
             chunks, symlinked array directories and chunks, a FIFO or device in place of a
             chunk, spec fields of a wrong type) through `vmerpo inspect` and EpisodeStore,
             each timed and its memory measured against bounds (1 s, 100 MiB); an append to
             the damage that could destroy data must be refused with no file changed, in the
             store or outside it; leftover rows of a killed writer are reported by inspect
             and removed by `vmerpo repair` so that diffusion_policy's reader sees exactly the
             committed episodes. Damaged ONNX policies (truncated, random bytes, empty,
             missing/garbled/mismatched metadata, renamed inputs) through `vmerpo eval` and
             PolicyRuntime. Each refused with exit code 2 / a ValueError and ONE line naming
             the problem, no traceback.
  ros        policy_node in its own process fed robot_nodes.testing's malformed-input set
             plus random malformed images: it stays alive, publishes only finite in-limit
             commands, counts the rejections and exits cleanly.

  stops      recorder_node stopped with SIGINT or SIGTERM mid-take (>= 20 trials): the take is
             committed, marked interrupted, and no committed episode changes; then a store
             on a full disk (a small tmpfs in the node's own mount namespace): the node stays
             up, refuses the take, keeps every committed episode.
  robot      policy_node in its own process: inference failures injected on live frames (a
             policy failing inside onnxruntime on white frames) each answered with a hold,
             ERROR on /diagnostics, then self-disable; NaN / mismatched / wild joint states
             on a rate-limited position interface: no command beyond the rate limit, no frame
             without a command; frozen, future and backwards camera stamps.

Every ROS process runs under the SHM-only DDS configuration (robot_nodes/netsafe.py); this
process asserts it holds no IP socket.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from robot_nodes.netsafe import ensure_safe_before_rclpy  # no rclpy, no torch

ROOT = Path(__file__).resolve().parents[2]

SECTIONS = ("training", "collection", "recording", "corruption", "ros", "stops", "robot")
# Counts: the full suite's trials per section (enough kills and damages that a rare loss shows);
# --quick is the CI smoke run.
FULL = {"train_kills": 5, "blind_kills": 2, "collect_trials": 20, "record_trials": 20, "ros_trials": 3,
        "fuzz_images": 200, "eval_cases": None, "stop_trials": 20, "robot_frames": 150, "robot_seconds": 10}
QUICK = {"train_kills": 2, "blind_kills": 1, "collect_trials": 4, "record_trials": 3, "ros_trials": 1,
         "fuzz_images": 50, "eval_cases": 3, "stop_trials": 2, "robot_frames": 30, "robot_seconds": 3}
# Resume is bit-exact by design (observed max difference: 0.0); 1e-6 is the bound we report
# against, on parameters (absolute) and on the final logged metrics (relative).
TRAIN_TOLERANCE = 1e-6
TIMING_KEYS = {"steps_per_s", "frames_per_s", "data_wait_share", "seconds"}


# -- small utilities ---------------------------------------------------------------------------
def vmerpo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vmerpo", *args]


def run(cmd: list[str], timeout: float = 600, log: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n[rc {proc.returncode}]\n{proc.stdout}\n{proc.stderr}\n")
    return proc


def spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    """A child in its own process group (so its workers can be found after a SIGKILL)."""
    f = open(log, "a")  # noqa: SIM115 - the child owns it; closed when we reap it
    f.write(f"$ {' '.join(cmd)}\n")
    f.flush()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    p._log_file = f  # type: ignore[attr-defined]
    return p


def reap(p: subprocess.Popen) -> int:
    rc = p.wait()
    p._log_file.close()  # type: ignore[attr-defined]
    return rc


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def file_marks(paths: list[Path]) -> tuple:
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)


def wait_until(pred: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(period)
    return pred()


def one_line_error(stderr: str) -> tuple[bool, str]:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in stderr, lines[0] if lines else ""


# -- (a) training killed and resumed -----------------------------------------------------------
def _flat_tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out.update(_flat_tensors(v, f"{prefix}/{i}"))
    return out


def param_diff(a: Path, b: Path, keys: tuple[str, ...]) -> float:
    """Max |a - b| over the float tensors under `keys` of two checkpoints (inf if they differ
    in structure)."""
    import torch

    ba, bb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    fa = _flat_tensors({k: ba[k] for k in keys if k in ba})
    fb = _flat_tensors({k: bb[k] for k in keys if k in bb})
    if not fa or fa.keys() != fb.keys() or any(fa[k].shape != fb[k].shape for k in fa):
        return float("inf")
    return max(float((fa[k].double() - fb[k].double()).abs().max()) if fa[k].numel() else 0.0 for k in fa)


def final_metrics(run_dir: Path) -> dict[str, float]:
    lines = [ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    row = json.loads(lines[-1])
    return {k: float(v) for k, v in row.items() if k not in TIMING_KEYS and isinstance(v, int | float)}


def metrics_diff(a: dict[str, float], b: dict[str, float]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max((abs(a[k] - b[k]) / max(1.0, abs(a[k])) for k in a), default=0.0)


def kill_and_resume(name: str, base_cmd: list[str], run_dir: Path, watch: list[Path], kills: int,
                    blind: int, rng: random.Random, log: Path, timeout: float = 300) -> dict[str, Any]:
    """Launch, SIGKILL after new progress plus a random delay, resume; `blind` extra kills land
    at random moments of a resumed launch (start-up included). `watch` lists the files that
    change as the run advances, phase by phase: kill i waits for a change in watch[t_i:], with
    t_i spread over the phases so the kills hit each of them."""
    res: dict[str, Any]
    res = {"kills_after_progress": 0, "kills_blind": 0, "launches": 0, "errors": [], "phases_hit": []}
    targets = [round(i * (len(watch) - 1) / max(kills - 1, 1)) for i in range(kills)]
    # the first launch is killed after progress (before it there is nothing to resume)
    rest = ["blind"] * blind + ["progress"] * (kills - 1)
    rng.shuffle(rest)
    modes = ["progress", *rest]
    first = True
    for mode in modes:
        resume = (run_dir / "config.json").exists()
        if not resume and not first:
            shutil.rmtree(run_dir, ignore_errors=True)  # killed before it wrote anything to resume
        first = False
        p = spawn(base_cmd + (["--resume"] if resume else []), log)
        res["launches"] += 1
        if mode == "progress":
            files = watch[targets.pop(0):]
            marks = file_marks(files)
            wait_until(lambda m=marks, p=p, f=files:  # type: ignore[misc]
                       file_marks(f) != m or p.poll() is not None, timeout)
            if p.poll() is None:
                time.sleep(rng.uniform(0.0, 0.5))
                res["phases_hit"].append(max(i for i, f in enumerate(watch) if f.exists()) if any(
                    f.exists() for f in watch) else -1)
        else:
            time.sleep(rng.uniform(0.2, 4.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            res["kills_after_progress" if mode == "progress" else "kills_blind"] += 1
        rc = reap(p)
        if rc not in (0, -signal.SIGKILL):
            res["errors"].append(f"{name} launch {res['launches']} exited {rc}")
    final = run(base_cmd + (["--resume"] if (run_dir / "config.json").exists() else []), timeout, log)
    res["launches"] += 1
    res["final_exit_code"] = final.returncode
    if final.returncode != 0:
        res["errors"].append(f"{name} final resume exited {final.returncode}: {final.stderr.strip()[-300:]}")
    return res


def training_section(wd: Path, counts: dict, rng: random.Random, log: Callable[[str], None]) -> dict:
    import numpy as np

    from learning.store import EpisodeWriter, StoreSpec
    from learning.synthetic import synthetic_episode

    data = wd / "family.zarr"
    spec = StoreSpec(robot="synthetic", control_hz=12.5, image_size=32,
                     state_names=[f"q{i}" for i in range(8)], action_names=["dx", "dy", "dz", "grip"],
                     action_low=[-1.0] * 4, action_high=[1.0] * 4, hold_action=[0.0] * 4,
                     tasks=[{"id": i, "name": f"t{i}", "split": "train" if i < 3 else "test"} for i in range(5)])
    nrng = np.random.default_rng(0)
    with EpisodeWriter(data, spec, mode="w", log=lambda m: None) as w:
        for t in (0, 1, 2):
            for _ in range(3):
                ep = synthetic_episode(nrng, 24, 32)
                ep["reward"] = (ep["action"][:, 0] * (1 if t % 2 else -1)).astype(np.float32)
                w.add_episode(ep, task_id=t, success=False)
    k, b = counts["train_kills"], counts["blind_kills"]
    runs: dict[str, dict] = {}

    # world model alone: ~40 tiny steps/s here; checkpoints every 10 steps
    steps = 80 * (k + b + 1)
    base = vmerpo_cmd("train-model", "--data", str(data), "--config", "tiny", "--steps", str(steps),
                      "--no-progress", "--json")
    t0 = time.perf_counter()
    ref = run([*base, "--out", str(wd / "wm_ref")], log=wd / "training.log")
    killed = wd / "wm_killed"
    r = kill_and_resume("train-model", [*base, "--out", str(killed)], killed,
                        [killed / "checkpoints" / "last.pt"], k, b, rng, wd / "training.log")
    r["reference_exit_code"] = ref.returncode
    if ref.returncode == 0 and r["final_exit_code"] == 0:
        r["param_max_abs_diff"] = param_diff(wd / "wm_ref" / "model.pt", killed / "model.pt", ("model",))
        r["metrics_max_rel_diff"] = metrics_diff(final_metrics(wd / "wm_ref"), final_metrics(killed))
        r["final_metrics"] = final_metrics(killed)
    r["seconds"] = round(time.perf_counter() - t0, 1)
    runs["world_model"] = r
    log(f"  train-model: {r['kills_after_progress']}+{r['kills_blind']} kills, "
        f"param diff {r.get('param_max_abs_diff')}, metrics diff {r.get('metrics_max_rel_diff')}")

    # the whole `vmerpo train` pipeline: world model, latents, MerPO (meta-steps of 3 tasks)
    cfg = wd / "merpo.json"
    cfg.write_text(json.dumps({"preset": "tiny", "world_model": {"steps": 60},
                               "merpo": {"iterations": 6 * (k + b + 1), "steps_per_iteration": 2},
                               "checkpoint_every": 1, "log_every": 2}))
    base = vmerpo_cmd("train", "--data", str(data), "--config", str(cfg), "--no-progress", "--json")
    t0 = time.perf_counter()
    ref = run([*base, "--out", str(wd / "merpo_ref")], log=wd / "training.log")
    killed = wd / "merpo_killed"
    watch = [killed / "world_model" / "checkpoints" / "last.pt", killed / "world_model" / "model.pt",
             killed / "latents.npz", killed / "checkpoints" / "merpo.pt"]
    r = kill_and_resume("train", [*base, "--out", str(killed)], killed, watch, k, b, rng, wd / "training.log")
    r["reference_exit_code"] = ref.returncode
    if ref.returncode == 0 and r["final_exit_code"] == 0:
        r["param_max_abs_diff"] = max(
            param_diff(wd / "merpo_ref" / "world_model" / "model.pt", killed / "world_model" / "model.pt", ("model",)),
            param_diff(wd / "merpo_ref" / "checkpoints" / "merpo.pt", killed / "checkpoints" / "merpo.pt",
                       ("meta_actor", "meta_critic", "learners")))
        r["metrics_max_rel_diff"] = metrics_diff(final_metrics(wd / "merpo_ref"), final_metrics(killed))
        r["final_metrics"] = final_metrics(killed)
    r["seconds"] = round(time.perf_counter() - t0, 1)
    runs["merpo"] = r
    log(f"  train: {r['kills_after_progress']}+{r['kills_blind']} kills, "
        f"param diff {r.get('param_max_abs_diff')}, metrics diff {r.get('metrics_max_rel_diff')}")
    for r in runs.values():
        r["recovered"] = (r["final_exit_code"] == 0 and r.get("reference_exit_code") == 0
                          and r.get("param_max_abs_diff", float("inf")) <= TRAIN_TOLERANCE
                          and r.get("metrics_max_rel_diff", float("inf")) <= TRAIN_TOLERANCE)
    return {"tolerance": TRAIN_TOLERANCE, "runs": runs}


# -- (b) collection and recording killed -------------------------------------------------------
def episode_digest(store: Any, i: int) -> str:
    ep = store.episode(i)
    h = hashlib.sha1()
    for k in sorted(ep):
        h.update(k.encode())
        h.update(ep[k].tobytes())
    h.update(f"{int(store.episode_task[i])}/{bool(store.episode_success[i])}".encode())
    return h.hexdigest()


def committed_episodes(path: Path) -> int | None:
    """What a reader sees committed right now (None if the store cannot be opened)."""
    from learning.store import EpisodeStore

    try:
        return EpisodeStore.open(path, load="lazy").n_episodes
    except Exception:  # noqa: BLE001 - a store mid-creation, or damage (checked after the kill)
        return None


def collection_section(wd: Path, counts: dict, rng: random.Random, log: Callable[[str], None]) -> dict:
    from learning.store import EpisodeStore

    trials = counts["collect_trials"]
    per_task = max(4, trials + 4)  # ~3.6 episodes committed per trial were measured: room to spare
    args = ["collect", "--env", "reach-v3", "--tasks", "0,1,2,3", "--episodes-per-task", str(per_task),
            "--max-episode-steps", "20", "--quality", "medium", "--seed", "0", "--no-progress"]
    logf = wd / "collection.log"
    ref = run(vmerpo_cmd(*args, "--workers", "0", "--out", str(wd / "collect_ref.zarr")), log=logf)
    if ref.returncode != 0:
        return {"trials": 0, "error": f"reference collection failed: {ref.stderr.strip()[-300:]}"}
    ref_store = EpisodeStore.open(wd / "collect_ref.zarr")
    ref_digests = [episode_digest(ref_store, i) for i in range(ref_store.n_episodes)]
    path = wd / "collect.zarr"
    out: dict[str, Any]
    out = {"trials": 0, "kills": 0, "episodes_planned": len(ref_digests), "max_committed_seen": 0,
           "lost_committed_episodes": 0, "unopenable_stores": 0, "corrupted_episodes": 0,
           "orphan_workers": 0, "finished_before_kill": 0, "errors": []}
    for trial in range(trials):
        before = committed_episodes(path) or 0
        workers = trial % 2
        cmd = vmerpo_cmd(*args, "--workers", str(workers), "--out", str(path),
                         *(["--resume"] if path.exists() else []))
        p = spawn(cmd, logf)
        seen = [before]

        def progressed(seen: list[int] = seen, p: subprocess.Popen = p, before: int = before) -> bool:
            n = committed_episodes(path)
            if n is not None:
                seen[0] = max(seen[0], n)
            return seen[0] > before or p.poll() is not None

        wait_until(progressed, 180, period=0.05)
        if p.poll() is None:
            time.sleep(rng.uniform(0.0, 0.6))
            n = committed_episodes(path)  # the last look of a reader before the crash
            if n is not None:
                seen[0] = max(seen[0], n)
        out["trials"] += 1
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            out["kills"] += 1
        else:
            out["finished_before_kill"] += 1
        rc = reap(p)
        if rc not in (0, -signal.SIGKILL):
            out["errors"].append(f"trial {trial}: collect exited {rc}")
        if not wait_until(lambda pid=p.pid: not group_alive(pid), 5):  # type: ignore[misc]
            out["orphan_workers"] += 1
            os.killpg(p.pid, signal.SIGKILL)  # our own child's group, found alive
        out["max_committed_seen"] = max(out["max_committed_seen"], seen[0])
        try:
            store = EpisodeStore.open(path)
        except Exception as e:  # noqa: BLE001 - counted; the suite goes on
            out["unopenable_stores"] += 1
            out["errors"].append(f"trial {trial}: store does not open: {e}")
            continue
        out["lost_committed_episodes"] += max(0, seen[0] - store.n_episodes)
        out["corrupted_episodes"] += sum(
            i >= len(ref_digests) or episode_digest(store, i) != ref_digests[i] for i in range(store.n_episodes))
    final = run(vmerpo_cmd(*args, "--workers", "0", "--out", str(path), "--resume"), log=logf)
    out["final_exit_code"] = final.returncode
    try:
        store = EpisodeStore.open(path)
        out["final_identical_to_uninterrupted"] = (
            store.n_episodes == len(ref_digests)
            and all(episode_digest(store, i) == ref_digests[i] for i in range(store.n_episodes)))
    except Exception as e:  # noqa: BLE001
        out["final_identical_to_uninterrupted"] = False
        out["errors"].append(f"final store does not open: {e}")
    out["recovery_messages"] = logf.read_text().count("dropped an incomplete episode")
    log(f"  collect: {out['trials']} trials, {out['kills']} kills, {out['max_committed_seen']} committed seen, "
        f"lost {out['lost_committed_episodes']}, identical after resume {out['final_identical_to_uninterrupted']}")
    return out


META_STATE = ["ee_x", "ee_y", "ee_z", "gripper_opening"] + [f"right_j{i}" for i in range(7)]


class _Ticker:
    """Publishes recorder ticks (joint state, image, the command answering it, reward), each
    tick's values equal to a global tick number so alignment can be checked in the store."""

    def __init__(self, node: Any, ns: str) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64, Float64MultiArray

        self.node = node
        self.pubs = {
            "image": node.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data),
            "joint_states": node.create_publisher(JointState, f"{ns}/joint_states", qos_profile_sensor_data),
            "command": node.create_publisher(Float64MultiArray, f"{ns}/command", 10),
            "reward": node.create_publisher(Float64, f"{ns}/reward", 10),
        }

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.pubs.values())

    def tick(self, i: int, noise: bool = False) -> None:
        import numpy as np
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64, Float64MultiArray

        from robot_nodes.conversions import array_to_image, fill_float64_array, ns_to_stamp

        stamp = 1_700_000_000_000_000_000 + i * 50_000_000
        js = JointState(name=list(META_STATE), position=[float(i)] * len(META_STATE))
        ns_to_stamp(stamp, js.header.stamp)
        self.pubs["joint_states"].publish(js)
        img = Image()
        ns_to_stamp(stamp, img.header.stamp)
        pixels = np.full((48, 80, 3), i % 256, np.uint8)
        if noise:  # incompressible (fills a disk), pixel (0, 0) still the tick number
            pixels = np.random.default_rng(i).integers(0, 256, (48, 80, 3), dtype=np.uint8)
            pixels[:8, :8] = i % 256
        array_to_image(pixels, img, "bgr8")
        self.pubs["image"].publish(img)
        time.sleep(0.01)
        cmd = Float64MultiArray()
        fill_float64_array(cmd, [i / 1000.0] * 4, stamp)
        self.pubs["command"].publish(cmd)
        time.sleep(0.005)
        self.pubs["reward"].publish(Float64(data=float(i)))
        time.sleep(0.01)

    def close(self) -> None:
        for p in self.pubs.values():
            self.node.destroy_publisher(p)


def check_committed(store: Any, digests: dict[int, str], ticks: dict[int, tuple[int, int]],
                    out: dict[str, Any]) -> None:
    """Count committed episodes that changed since first seen (`digests`, updated) or whose
    rows are misaligned (`ticks`: the published ticks of the episodes that say)."""
    for i in range(store.n_episodes):
        d = episode_digest(store, i)
        if i in digests and digests[i] != d:
            out["changed_episodes"] += 1
        digests.setdefault(i, d)
        if not recorded_episode_ok(store.episode(i), ticks.get(i)):
            out["misaligned_episodes"] += 1


def recorded_episode_ok(ep: dict, ticks: tuple[int, int] | None) -> bool:
    """Rows pair the image, state and command of one tick; an acknowledged episode holds
    only ticks that were published inside it."""
    import numpy as np

    s = ep["state"][:, 0].astype(np.int64)
    if len(s) == 0 or not np.all(ep["image"][:, 0, 0, 0] == s % 256):
        return False
    if not np.allclose(ep["action"][:, 0] * 1000.0, s, atol=1e-2):
        return False
    if ticks is not None:
        first, n = ticks
        return bool(np.all((s >= first) & (s < first + n)) and np.all(np.diff(s) > 0))
    return True


def recording_section(wd: Path, counts: dict, rng: random.Random, log: Callable[[str], None]) -> dict:
    from std_srvs.srv import SetBool, Trigger

    from learning.store import EpisodeStore
    from robot_nodes.netsafe import inet_sockets_of_this_process
    from robot_nodes.testing import NodeProcess, call, ros_context, wait_for

    store_path = wd / "rec.zarr"
    acked: dict[int, tuple[int, int]] = {}  # episode index -> (first tick, ticks)
    digests: dict[int, str] = {}
    out: dict[str, Any]
    out = {"trials": 0, "kills": 0, "modes": {}, "acknowledged_commits": 0, "lost_committed_episodes": 0,
           "unopenable_stores": 0, "changed_episodes": 0, "misaligned_episodes": 0, "startup_failures": 0,
           "network_violations": 0, "errors": []}
    tick = 0
    with ros_context("faults_recorder_driver") as (_, _, (drv,)):
        for trial in range(counts["record_trials"]):
            ns = f"/faults_rec_{trial}"
            node = NodeProcess("robot_nodes.recorder_node",
                               ["--params-file", "config/recorder_node.yaml", "-p", f"store:={store_path}",
                                "-p", "task_id:=7", "-r", f"__ns:={ns}"], wd / f"recorder_{trial}.log")
            ticker = _Ticker(drv, ns)
            srv = f"{ns}/recorder_node"
            mode = rng.choice(["mid-episode", "during-commit", "between-episodes"])
            out["modes"][mode] = out["modes"].get(mode, 0) + 1
            try:
                if not wait_for(ticker.connected, 60) or not node.alive():
                    out["startup_failures"] += 1
                    out["errors"].append(f"trial {trial}: recorder did not start: {node.output()[-300:]}")
                    continue
                out["trials"] += 1
                for _ in range(rng.randint(0 if mode != "between-episodes" else 1, 2)):
                    assert call(drv, Trigger, f"{srv}/start_episode", timeout=20).success
                    first, n = tick, rng.randint(3, 10)
                    for _ in range(n):
                        ticker.tick(tick)
                        tick += 1
                    res = call(drv, SetBool, f"{srv}/end_episode", SetBool.Request(data=True), timeout=20)
                    if res.success:
                        acked[int(res.message.split()[1])] = (first, n)
                if mode == "mid-episode":
                    assert call(drv, Trigger, f"{srv}/start_episode", timeout=20).success
                    stop = threading.Event()
                    counter = [tick]

                    def stream(stop: threading.Event = stop, counter: list[int] = counter,
                               ticker: _Ticker = ticker) -> None:
                        while not stop.is_set():
                            ticker.tick(counter[0])
                            counter[0] += 1

                    th = threading.Thread(target=stream, daemon=True)
                    th.start()
                    time.sleep(rng.uniform(0.05, 1.5))
                    node.stop(signal.SIGKILL)
                    stop.set()
                    th.join(2)
                    tick = counter[0]
                elif mode == "during-commit":
                    assert call(drv, Trigger, f"{srv}/start_episode", timeout=20).success
                    first, n = tick, rng.randint(3, 10)
                    for _ in range(n):
                        ticker.tick(tick)
                        tick += 1
                    client = drv.create_client(SetBool, f"{srv}/end_episode")
                    assert client.wait_for_service(timeout_sec=10)
                    future = client.call_async(SetBool.Request(data=True))
                    time.sleep(rng.uniform(0.0, 0.03))
                    node.stop(signal.SIGKILL)
                    time.sleep(0.2)
                    if future.done() and future.result() is not None and future.result().success:
                        acked[int(future.result().message.split()[1])] = (first, n)
                    drv.destroy_client(client)
                else:
                    time.sleep(rng.uniform(0.0, 0.3))
                    node.stop(signal.SIGKILL)
                out["kills"] += 1
            except AssertionError as e:
                out["errors"].append(f"trial {trial}: {e}")
            finally:
                node.stop(signal.SIGKILL)
                ticker.close()
                if "IP sockets" in node.output():
                    out["network_violations"] += 1
            try:
                store = EpisodeStore.open(store_path)
            except FileNotFoundError:
                continue  # killed before its first commit created anything
            except Exception as e:  # noqa: BLE001
                out["unopenable_stores"] += 1
                out["errors"].append(f"trial {trial}: store does not open: {e}")
                continue
            out["lost_committed_episodes"] += sum(i >= store.n_episodes for i in acked)
            check_committed(store, digests, acked, out)
        if inet_sockets_of_this_process():
            out["network_violations"] += 1
    out["acknowledged_commits"] = len(acked)
    out["episodes_in_store"] = len(digests)
    log(f"  recorder: {out['trials']} trials, {out['kills']} kills {out['modes']}, {len(acked)} acknowledged "
        f"commits, lost {out['lost_committed_episodes']}, changed {out['changed_episodes']}")
    return out


# -- (c) corrupted stores and policies ---------------------------------------------------------
# Every store refusal is measured (what a user waits for, what it costs): REFUSAL_BOUND_S and
# REFUSAL_BOUND_MB bound the refusal itself (a damaged length must cost a reader no more than an
# intact store: a declared length of 1e12 rows is refused in under a second), HANG_TIMEOUT_S turns a hang (a FIFO read) into a recorded failure.
REFUSAL_BOUND_S = 1.0
REFUSAL_BOUND_MB = 100.0
HANG_TIMEOUT_S = 60.0
LOCK_NAME = ".vmerpo-writer.lock"


# Runs the measured command as its own child and reports that child's wait4 rusage. The
# intermediary is needed: Linux carries a parent's peak RSS into a child's ru_maxrss through
# fork and exec (seen: 403 MiB for `vmerpo inspect` spawned by the suite after the training
# section, 48 MiB from a shell), while this small interpreter passes on only its own ~10 MiB.
_MEASURE = """import json, os, signal, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": time.perf_counter() - t, "maxrss_kb": usage.ru_maxrss}, f)
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def run_measured(cmd: list[str], timeout: float = HANG_TIMEOUT_S) -> dict[str, Any]:
    """Run `cmd` in its own process group and measure it: wall seconds from its start to its
    exit, and the peak resident memory of that one process (ru_maxrss of wait4, taken by a small
    intermediary so that this process's own peak does not leak into it; see _MEASURE). At
    `timeout` the group is SIGKILLed and the run recorded as timed out: a hang is a result,
    never a stuck suite."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vmerpo-measure-") as tmp:
        usage_file = Path(tmp) / "usage.json"
        p = subprocess.Popen([sys.executable, "-c", _MEASURE, str(usage_file), *cmd], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            timed_out = True
        usage = json.loads(usage_file.read_text()) if usage_file.exists() else None
    return {"rc": p.returncode, "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace"),
            "seconds": usage["seconds"] if usage else time.perf_counter() - t0,
            "peak_rss_mb": usage["maxrss_kb"] / 1024 if usage else None, "timed_out": timed_out}


def probe_store(what: str, path: str, warm: str) -> None:
    """One API check in a fresh interpreter (run by the corruption section as
    `python -c "...probe_store(...)"`), so that a hang is killed and memory is this check's
    alone. Opens and verifies the undamaged store `warm` first (lazy imports, codecs), then
    calls, on `path`, "open" = EpisodeStore.open(load="lazy") + verify() or "append" =
    EpisodeWriter(mode="a") + add_episode. Prints one line, PROBE {json}: exit_code (2 for a
    ValueError, 1 for any other exception, 0 if accepted), message, seconds (the call alone),
    peak_rss_mb (VmHWM, this process's peak RSS, reset to its RSS just before the call through
    /proc/self/clear_refs) and rss_growth_mb (that peak minus the RSS before the call), and
    traced_peak_mb (the peak of Python and numpy allocations during a second, identical call
    under tracemalloc; not made after an accepted append, which would append again)."""
    import gc
    import tracemalloc

    import numpy as np

    from learning.store import EpisodeStore, EpisodeWriter
    from learning.synthetic import synthetic_episode

    EpisodeStore.open(warm, load="lazy").verify()
    ep = synthetic_episode(np.random.default_rng(11), 20, 32)

    def call() -> dict[str, Any]:
        try:
            if what == "open":
                EpisodeStore.open(path, load="lazy").verify()
            else:
                with EpisodeWriter(path, mode="a", log=lambda m: None) as w:
                    w.add_episode(ep, task_id=0, success=True)
            return {"exit_code": 0, "message": "accepted"}
        except ValueError as e:
            return {"exit_code": 2, "message": str(e)}
        except Exception as e:  # noqa: BLE001 - an unexpected type is a failure, recorded
            return {"exit_code": 1, "message": f"{type(e).__name__}: {e}"}

    gc.collect()
    try:  # reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    before = _proc_status_mb("VmRSS" if reset else "VmHWM")
    t0 = time.perf_counter()
    out = call()
    out["seconds"] = time.perf_counter() - t0
    peak = _proc_status_mb("VmHWM")
    out.update(peak_rss_mb=peak, rss_growth_mb=peak - before, peak_reset=reset, traced_peak_mb=None)
    if what == "open" or out["exit_code"] != 0:
        tracemalloc.start()
        call()
        out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    print("PROBE " + json.dumps(out), flush=True)


def _proc_status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(key)


def run_probe(what: str, path: Path, warm: Path) -> dict[str, Any]:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from vmerpo.benchmarks.faults import probe_store; "
            "probe_store(*sys.argv[2:])")
    r = run_measured([sys.executable, "-c", code, str(ROOT), what, str(path), str(warm)])
    line = next((ln for ln in r["stdout"].splitlines() if ln.startswith("PROBE ")), None)
    if line is None:  # killed (a hang), or died
        why = "timed out (a hang)" if r["timed_out"] else f"died (exit {r['rc']})"
        tail = (r["stderr"].strip().splitlines() or [""])[-1]
        return {"exit_code": r["rc"], "message": f"{why}: {tail}".rstrip(": "), "seconds": r["seconds"],
                "peak_rss_mb": r["peak_rss_mb"], "rss_growth_mb": None, "traced_peak_mb": None,
                "timed_out": r["timed_out"]}
    return {**json.loads(line[len("PROBE "):]), "timed_out": False}


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root` without following links or opening special files: a regular
    file by its sha256, a link by its target, anything else by its kind (writer lock files
    aside: taking the lock is not a change). To prove that nothing changed."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if name == LOCK_NAME:
                continue
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif not p.is_dir():
                out[rel] = "special"
    return out


def _zarr_json(path: Path) -> Path:
    return path / ".zarray" if (path / ".zarray").exists() else path / "zarr.json"


def _first_chunk(array_dir: Path) -> Path:
    chunks = sorted(p for p in array_dir.rglob("*") if p.is_file() and not p.name.startswith((".", "zarr.json")))
    return chunks[0]


def _edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _attrs_path(store: Path) -> Path:
    return store / ".zattrs" if (store / ".zattrs").exists() else store / "zarr.json"


def _store_attrs(d: dict) -> dict:
    return d.get("attributes", d)  # zarr 3 keeps attrs inside zarr.json


def _declare_rows(p: Path, name: str, rows: int) -> None:
    """Edit an array's metadata to declare `rows` along axis 0, writing no chunk."""
    _edit_json(_zarr_json(p / name), lambda d: d["shape"].__setitem__(0, rows))


def _committed_frames(p: Path) -> int:
    import zarr

    ends: Any = zarr.open_group(str(p), mode="r")["meta/episode_ends"]
    return int(ends[-1])


def _past_the_bound(p: Path, name: str) -> None:
    from learning.store import MAX_LEFTOVER_ROWS

    _declare_rows(p, name, _committed_frames(p) + MAX_LEFTOVER_ROWS + 1)


def _damage_last_end(p: Path) -> None:
    """The last commit entry made non-zero and not above the one before: damage that an
    unguarded writer takes for a commit cut short, deleting that committed episode's rows."""
    import zarr

    ends: Any = zarr.open_group(str(p), mode="r+")["meta/episode_ends"]
    e = ends[:]
    ends[len(e) - 1] = int(e[-2]) - 3


def _victim(p: Path) -> Path:
    """Another store beside `p`, one episode longer: through a link its arrays hold rows past
    p's commit, which an append to p would truncate (as a killed writer's leftovers)."""
    import numpy as np

    from learning.store import EpisodeWriter
    from learning.synthetic import synthetic_episode

    v = p.with_name(p.stem + "-victim.zarr")
    shutil.copytree(p, v)
    with EpisodeWriter(v, mode="a", log=lambda m: None) as w:
        w.add_episode(synthetic_episode(np.random.default_rng(7), 20, 32), task_id=0, success=True)
    return v


def _link_array_dir(p: Path, name: str) -> None:
    v = _victim(p)
    shutil.rmtree(p / name)
    (p / name).symlink_to(v / name, target_is_directory=True)


def _link_chunk(p: Path, name: str) -> None:
    chunk = _first_chunk(p / name)
    target = _victim(p) / chunk.relative_to(p)
    chunk.unlink()
    chunk.symlink_to(target)


def _fifo_chunk(p: Path, name: str) -> None:
    chunk = _first_chunk(p / name)
    chunk.unlink()
    os.mkfifo(chunk)


def _device_chunk(p: Path, name: str) -> str | None:
    """/dev/zero's character device (1, 5) in place of a chunk: it reads without end. Creating
    a device node needs root; otherwise a link to /dev/zero (refused as a link; said so)."""
    import stat

    chunk = _first_chunk(p / name)
    chunk.unlink()
    try:
        os.mknod(chunk, 0o644 | stat.S_IFCHR, os.makedev(1, 5))
        return None
    except PermissionError:
        chunk.symlink_to("/dev/zero")
        return "not root: a symbolic link to /dev/zero instead of a device node"


def _spec_set(fn: Callable[[dict], None]) -> Callable[[Path, random.Random], None]:
    return lambda p, r: _edit_json(_attrs_path(p), lambda d: fn(_store_attrs(d)))


STORE_CASES: dict[str, tuple[Callable[[Path, random.Random], object], tuple[str, ...]]] = {
    # name: (damage, words one of which the error must contain); a damage may return a note
    "truncated image chunk": (lambda p, r: _first_chunk(p / "data/image").write_bytes(
        _first_chunk(p / "data/image").read_bytes()[:40]), ("data/image",)),
    "garbled image chunk": (lambda p, r: _first_chunk(p / "data/image").write_bytes(
        r.randbytes(_first_chunk(p / "data/image").stat().st_size)), ("data/image",)),
    "garbled action chunk": (lambda p, r: _first_chunk(p / "data/action").write_bytes(
        r.randbytes(_first_chunk(p / "data/action").stat().st_size)), ("data/action",)),
    "missing image chunk": (lambda p, r: _first_chunk(p / "data/image").unlink(), ("data/image",)),
    "missing array data/reward": (lambda p, r: shutil.rmtree(p / "data/reward"), ("data/reward",)),
    "missing array meta/episode_ends": (lambda p, r: shutil.rmtree(p / "meta/episode_ends"),
                                        ("meta/episode_ends",)),
    "garbled array metadata": (lambda p, r: _zarr_json(p / "data/state").write_text("{not json"),
                               ("data/state",)),
    "wrong dtype in metadata": (lambda p, r: _edit_json(_zarr_json(p / "data/action"),
                                lambda d: d.update(dtype="<f8") if "dtype" in d else d.update(data_type="float64")),
                                ("data/action",)),
    "attrs not JSON": (lambda p, r: _attrs_path(p).write_text("{garbage"), ("attrs", "zarr group", ".zattrs")),
    "attrs without spec": (lambda p, r: _edit_json(_attrs_path(p), lambda d: _store_attrs(d).pop("spec")),
                           ("spec",)),
    "spec lacks action_names": (lambda p, r: _edit_json(_attrs_path(p),
                                lambda d: _store_attrs(d)["spec"].pop("action_names")), ("action_names",)),
    "spec image_size disagrees": (lambda p, r: _edit_json(_attrs_path(p),
                                  lambda d: _store_attrs(d)["spec"].update(image_size=48)), ("data/image",)),
    "NaN in data/action": (lambda p, r: _set_value(p, "data/action", (7, 1), float("nan")), ("data/action",)),
    "length mismatch": (lambda p, r: _resize(p, "data/action", -5), ("data/action",)),
    "unknown task id": (lambda p, r: _set_value(p, "meta/episode_task", (0,), 99), ("episode_task", "task")),
    # untrusted stores (declared lengths, commit entries, links, special files, spec types): refused
    # in bounded time and memory, naming the array
    "1e12 rows declared on data/image": (lambda p, r: _declare_rows(p, "data/image", 10**12),
                                         ("data/image declares 1000000000000",)),
    "1e12 rows declared on data/state": (lambda p, r: _declare_rows(p, "data/state", 10**12),
                                         ("data/state declares 1000000000000",)),
    "1e12 entries declared on meta/episode_ends": (lambda p, r: _declare_rows(p, "meta/episode_ends", 10**12),
                                                   ("meta/episode_ends declares 1000000000000",)),
    "rows past the commit beyond MAX_LEFTOVER_ROWS": (lambda p, r: _past_the_bound(p, "data/action"),
                                                      ("data/action declares",)),
    "damaged last meta/episode_ends entry": (lambda p, r: _damage_last_end(p), ("meta/episode_ends[4]",)),
    "oversized declared chunk": (lambda p, r: _edit_json(_zarr_json(p / "data/state"),
                                 lambda d: d["chunks"].__setitem__(0, 2**40)), ("data/state declares chunks",)),
    "data/image a symlink to another store's array": (lambda p, r: _link_array_dir(p, "data/image"),
                                                      ("data/image is a symbolic link",)),
    "chunk file a symlink into another store": (lambda p, r: _link_chunk(p, "data/action"),
                                                ("data/action/0.0 is a symbolic link",)),
    "FIFO in place of a chunk": (lambda p, r: _fifo_chunk(p, "data/image"), ("data/image/0.0.0.0 is a FIFO",)),
    "character device (/dev/zero) in place of a chunk": (lambda p, r: _device_chunk(p, "data/reward"),
                                                         ("data/reward/0 is",)),
    "spec field of a wrong type (control_hz a string)": (_spec_set(lambda a: a["spec"].update(control_hz="30")),
                                                         ("spec field control_hz",)),
    "spec field of a wrong type (an action_low entry a string)": (
        _spec_set(lambda a: a["spec"]["action_low"].__setitem__(1, "x")), ("spec field action_low",)),
    "spec attrs not an object": (_spec_set(lambda a: a.update(spec=["not", "an", "object"])),
                                 ("'spec' must be a JSON object",)),
}
# The damage under which an append could destroy data (a commit entry taken for a commit cut
# short, an array or chunk of another store reached through a link, a declared length an
# append would resize from): each also gets an EpisodeWriter append, which must be refused with
# no byte of the store and no file outside it changed.
APPEND_CASES = ("damaged last meta/episode_ends entry", "data/image a symlink to another store's array",
                "chunk file a symlink into another store", "1e12 rows declared on data/image",
                "rows past the commit beyond MAX_LEFTOVER_ROWS")


def _set_value(p: Path, name: str, index: tuple, value: Any) -> None:
    import zarr

    cast("zarr.Array", zarr.open_group(str(p), mode="r+")[name])[index] = value


def _resize(p: Path, name: str, delta: int) -> None:
    import zarr

    a = cast("zarr.Array", zarr.open_group(str(p), mode="r+")[name])
    a.resize((a.shape[0] + delta, *a.shape[1:]))


def make_small_store(path: Path) -> Path:
    import numpy as np

    from learning.store import EpisodeWriter
    from learning.synthetic import bench_spec, synthetic_episode

    rng = np.random.default_rng(0)
    with EpisodeWriter(path, bench_spec(32), mode="w", log=lambda m: None) as w:
        for i in range(5):
            w.add_episode(synthetic_episode(rng, 20, 32), task_id=i % 3, success=bool(i % 2))
    return path


def policy_spec_for_reach() -> Any:
    """The spec `vmerpo eval --env reach-v3` accepts (so the damage is the only fault)."""
    from learning.runtime.spec import PolicySpec

    return PolicySpec(image_size=64, action_names=["ee_dx", "ee_dy", "ee_dz", "gripper_effort"],
                      action_low=[-1.0] * 4, action_high=[1.0] * 4, deter_size=32, stoch_size=8,
                      action_type="ee_delta", hold_action=[0.0] * 4, control_hz=80.0,
                      env={"family": "reach-v3"})


def _set_metadata(src: Path, dst: Path, fn: Callable[[dict[str, str]], object]) -> None:
    import onnx

    from learning.runtime.spec import SPEC_KEY

    m = onnx.load(str(src))
    props = {p.key: p.value for p in m.metadata_props}
    fn(props)
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    assert SPEC_KEY  # the key every case manipulates


def _spec_edit(**changes: Any) -> Callable[[dict[str, str]], None]:
    from learning.runtime.spec import SPEC_KEY

    def fn(props: dict[str, str]) -> None:
        d = json.loads(props[SPEC_KEY])
        d.update(changes)
        props[SPEC_KEY] = json.dumps(d)

    return fn


def _rename_input(src: Path, dst: Path) -> None:
    import onnx

    m = onnx.load(str(src))
    old = m.graph.input[1].name
    m.graph.input[1].name = "previous_action"
    for node in m.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = "previous_action"
    onnx.save(m, str(dst))


def _spec_key() -> str:
    from learning.runtime.spec import SPEC_KEY

    return SPEC_KEY


ONNX_CASES: dict[str, tuple[Callable[[Path, Path, random.Random], object], tuple[str, ...]]] = {
    "truncated file": (lambda s, d, r: d.write_bytes(s.read_bytes()[: s.stat().st_size // 2]),
                       ("not a valid ONNX", "not a readable ONNX")),
    "random bytes": (lambda s, d, r: d.write_bytes(r.randbytes(s.stat().st_size)),
                     ("not a valid ONNX", "not a readable ONNX")),
    "empty file": (lambda s, d, r: d.write_bytes(b""), ("not a valid ONNX", "not a readable ONNX", "empty")),
    "text file": (lambda s, d, r: d.write_text("this is not a model\n"), ("not a valid ONNX", "not a readable ONNX")),
    "missing spec metadata": (lambda s, d, r: _set_metadata(s, d, lambda p: p.pop(_spec_key())), ("vmerpo.spec",)),
    "spec not JSON": (lambda s, d, r: _set_metadata(s, d, lambda p: p.update({_spec_key(): "{broken"})),
                      ("not valid JSON",)),
    "spec of another format": (lambda s, d, r: _set_metadata(s, d, _spec_edit(format="other")), ("format",)),
    "spec missing fields": (lambda s, d, r: _set_metadata(s, d, lambda p: p.update(
        {_spec_key(): json.dumps({"format": "vmerpo.policy", "format_version": 1})})), ("spec",)),
    "spec disagrees with graph": (lambda s, d, r: _set_metadata(s, d, _spec_edit(deter_size=48)),
                                  ("shape", "deter_size", "h")),
    "spec for another robot": (lambda s, d, r: _set_metadata(s, d, _spec_edit(
        action_names=["j0", "j1", "j2", "j3"], action_type="joint_position")), ("action_names", "action_type")),
    "renamed graph input": (lambda s, d, r: _rename_input(s, d), ("inputs", "contract")),
}


def _check_message(line: str, words: tuple[str, ...]) -> bool:
    return any(w.lower() in line.lower() for w in words)


def _store_row(name: str, tool: str, words: tuple[str, ...], exit_code: int, message: str, one_line: bool,
               seconds: float, within: bool, **extra: Any) -> dict:
    return {"target": "store", "case": name, "tool": tool, "exit_code": exit_code, "one_line": one_line,
            "names_problem": _check_message(message, words), "message": message, "seconds": round(seconds, 4),
            "within_bounds": within, **extra}


def _round(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def _probe_row(name: str, tool: str, words: tuple[str, ...], p: dict[str, Any], extra: dict) -> dict:
    growth, traced = p["rss_growth_mb"], p["traced_peak_mb"]
    within = (not p["timed_out"] and p["seconds"] <= REFUSAL_BOUND_S and growth is not None
              and growth <= REFUSAL_BOUND_MB and (traced is None or traced <= REFUSAL_BOUND_MB))
    return _store_row(name, tool, words, p["exit_code"], p["message"], "\n" not in p["message"], p["seconds"],
                      within, peak_rss_mb=_round(p["peak_rss_mb"], 1), rss_growth_mb=_round(growth, 1),
                      traced_peak_mb=_round(traced, 2), timed_out=p["timed_out"], **extra)


def store_damage_cases(wd: Path, rng: random.Random, names: list[str] | None = None) -> dict[str, Any]:
    """STORE_CASES (all, or `names`), each on a fresh copy of a small store, each through:
    `vmerpo inspect` (a subprocess: exit code, one line on stderr, wall time and peak RSS, also
    above the start-up of `vmerpo inspect` on a missing store, which imports as much and refuses
    at once) and EpisodeStore.open+verify (a fresh interpreter, probe_store: the call's time,
    peak-RSS growth and tracemalloc peak); APPEND_CASES also through an EpisodeWriter append,
    with every file of the store and beside it (a linked victim store) compared before and
    after. A row is refused cleanly only with exit code 2 / a ValueError, one line naming the
    problem, within REFUSAL_BOUND_S and REFUSAL_BOUND_MB, and (appends) nothing changed."""
    import statistics

    chosen = list(STORE_CASES) if names is None else names
    good = make_small_store(wd / "good.zarr")
    runs = [run_measured(vmerpo_cmd("inspect", str(wd / "no-such-store.zarr"))) for _ in range(3)]
    startup = {"seconds": round(statistics.median(r["seconds"] for r in runs), 4),
               "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] or 0.0 for r in runs), 1)}
    control = run_measured(vmerpo_cmd("inspect", str(good)))
    controls = {"inspect good store": control["rc"] == 0, "inspect missing store": all(r["rc"] == 2 for r in runs)}
    cases: list[dict] = []
    for i, name in enumerate(chosen):
        damage, words = STORE_CASES[name]
        case_dir = wd / f"store_{i}"
        case_dir.mkdir()
        path = case_dir / "store.zarr"
        shutil.copytree(good, path)
        note = damage(path, rng)
        extra = {"note": note} if isinstance(note, str) else {}

        r = run_measured(vmerpo_cmd("inspect", str(path)))
        one, line = one_line_error(r["stderr"])
        over_s = r["seconds"] - startup["seconds"]
        over_mb = None if r["peak_rss_mb"] is None else round(r["peak_rss_mb"] - startup["peak_rss_mb"], 1)
        cases.append(_store_row(
            name, "vmerpo inspect", words, r["rc"], line if not r["timed_out"] else f"timed out after "
            f"{HANG_TIMEOUT_S:.0f} s", one and not r["timed_out"], r["seconds"],
            not r["timed_out"] and over_s <= REFUSAL_BOUND_S and over_mb is not None and over_mb <= REFUSAL_BOUND_MB,
            seconds_over_startup=round(over_s, 4), peak_rss_mb=_round(r["peak_rss_mb"], 1),
            rss_over_startup_mb=over_mb, timed_out=r["timed_out"], **extra))

        cases.append(_probe_row(name, "EpisodeStore.open+verify", words, run_probe("open", path, good), extra))

        if name in APPEND_CASES:
            store_before = snapshot(path)
            around_before = {k: v for k, v in snapshot(case_dir).items() if not k.startswith("store.zarr")}
            app = run_probe("append", path, good)
            store_after = snapshot(path)
            around_after = {k: v for k, v in snapshot(case_dir).items() if not k.startswith("store.zarr")}
            row = _probe_row(name, "EpisodeWriter append", words, app, extra)
            row.update(target="append", files_outside=len(around_before),
                       store_files_changed=sorted(k for k in set(store_before) | set(store_after)
                                                  if store_before.get(k) != store_after.get(k))[:10],
                       outside_files_changed=sorted(k for k in set(around_before) | set(around_after)
                                                    if around_before.get(k) != around_after.get(k))[:10])
            cases.append(row)
    for c in cases:
        c["refused_cleanly"] = bool(c["exit_code"] == 2 and c["one_line"] and c["names_problem"]
                                    and c["within_bounds"] and not c.get("store_files_changed")
                                    and not c.get("outside_files_changed"))
    return {"cases": cases, "controls": controls, "startup": startup,
            "bounds": {"seconds": REFUSAL_BOUND_S, "rss_mb": REFUSAL_BOUND_MB, "hang_timeout_s": HANG_TIMEOUT_S},
            "good_store": str(good)}


# -- leftover rows: inspect reports them, repair removes them, a zarr-2 reader then works ---------
def replay_buffer_read(path: Path) -> dict[str, Any]:
    """diffusion_policy's ReplayBuffer.copy_from_path with the numpy backend, as it reads a
    zarr-2 store: every meta/ array and every data/ array whole, then its constructor's check
    that every data array ends where meta/episode_ends does. (The reference reader of the
    fault suite and of tests/learning/test_store_hardening.py.)"""
    import numpy as np
    import zarr

    src_root: Any = zarr.open_group(str(path), mode="r")
    meta = {key: (np.array(value) if len(value.shape) == 0 else value[:])
            for key, value in src_root["meta"].arrays()}
    data = {key: value[:] for key, value in src_root["data"].arrays()}
    root: dict[str, Any] = {"meta": meta, "data": data}
    assert "episode_ends" in root["meta"]
    for key, value in root["data"].items():
        assert value.shape[0] == root["meta"]["episode_ends"][-1], \
            f"ReplayBuffer: data/{key} has {value.shape[0]} rows, episode_ends[-1] is {root['meta']['episode_ends'][-1]}"
    return root


def replay_buffer_episode(root: dict, i: int) -> dict[str, Any]:
    """ReplayBuffer.get_episode."""
    ends = root["meta"]["episode_ends"]
    start = 0 if i == 0 else int(ends[i - 1])
    return {k: v[start:int(ends[i])] for k, v in root["data"].items()}


KILLED_WRITER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from learning.store import EpisodeWriter
from learning.synthetic import synthetic_episode
with EpisodeWriter(sys.argv[2], mode="a", log=lambda m: None) as w:
    ep = synthetic_episode(np.random.default_rng(5), 400, 32)
    s = w.stream_episode(task_id=0)
    for t in range(400):  # more than one image chunk (341 rows): rows reach the disk uncommitted
        s.append({k: v[t] for k, v in ep.items()})
    print("streamed", flush=True)
    time.sleep(120)
"""


def _kill_streaming_writer(path: Path) -> str:
    """SIGKILL a writer streaming an episode once its first chunk of rows is on disk."""
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(ROOT), str(path)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    timer = threading.Timer(HANG_TIMEOUT_S, lambda: os.killpg(p.pid, signal.SIGKILL))
    timer.start()
    try:
        line = p.stdout.readline() if p.stdout else ""
    finally:
        timer.cancel()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
    return line.strip()


def _cut_short_commit(path: Path) -> str:
    """What a writer killed inside its commit leaves (the moment is too short to hit with a
    signal): an episode's data rows and per-episode meta entries, and the commit entry resized
    but never written (the fill value 0)."""
    import numpy as np
    import zarr

    from learning.synthetic import synthetic_episode

    root: Any = zarr.open_group(str(path), mode="r+")
    write_all = {"write_empty_chunks": True}
    for key, value in synthetic_episode(np.random.default_rng(6), 20, 32).items():
        root[f"data/{key}"].with_config(write_all).append(value)
    root["meta/episode_task"].with_config(write_all).append(np.array([1], np.int32))
    root["meta/episode_success"].with_config(write_all).append(np.array([True]))
    ends = root["meta/episode_ends"]
    ends.resize((ends.shape[0] + 1,))
    return "cut short"


def leftover_repair_checks(wd: Path, good: Path, log: Callable[[str], None] = print) -> list[dict]:
    """After a writer SIGKILLed mid-episode and after a commit cut short: `vmerpo inspect` exits
    0 and reports the leftover rows (naming the arrays and `vmerpo repair`); diffusion_policy's
    reader refuses the store; `vmerpo repair` removes them; the reader then sees exactly the
    committed episodes, byte for byte, and inspect reports nothing left over."""
    import numpy as np

    reference = replay_buffer_read(good)
    n_ref = len(reference["meta"]["episode_ends"])
    out: list[dict[str, Any]] = []
    for name, leave in (("writer SIGKILLed mid-episode", _kill_streaming_writer),
                        ("commit cut short (zero tail entry)", _cut_short_commit)):
        path = wd / f"leftover_{len(out)}.zarr"
        shutil.copytree(good, path)
        how = leave(path)
        r: dict[str, Any] = {"case": name, "writer": how}
        insp = run_measured(vmerpo_cmd("inspect", str(path)))
        line = next((ln for ln in insp["stdout"].splitlines() if ln.startswith("leftover")), "")
        r["inspect_exit_code"], r["inspect_leftover_line"] = insp["rc"], line
        r["inspect_reports_leftover"] = insp["rc"] == 0 and "data/image" in line and "vmerpo repair" in line
        try:
            replay_buffer_read(path)
            r["reader_before_repair"] = "read"
        except AssertionError as e:
            r["reader_before_repair"] = f"refused: {e}"
        rep = run_measured(vmerpo_cmd("repair", str(path)))
        r["repair_exit_code"], r["repair_output"] = rep["rc"], (rep["stdout"] + rep["stderr"]).strip()
        try:
            root = replay_buffer_read(path)
            eps = len(root["meta"]["episode_ends"])
            same = eps == n_ref and all(
                np.array_equal(replay_buffer_episode(root, k)[key], replay_buffer_episode(reference, k)[key])
                for k in range(n_ref) for key in reference["data"])
            r["reader_after_repair"] = f"{eps} episodes"
        except AssertionError as e:
            r["reader_after_repair"], same = f"refused: {e}", False
        r["reader_sees_exactly_the_committed_episodes"] = same
        after = run_measured(vmerpo_cmd("inspect", str(path)))
        r["inspect_after_repair_clean"] = after["rc"] == 0 and not any(
            ln.startswith("leftover") for ln in after["stdout"].splitlines())
        r["ok"] = bool(r["inspect_reports_leftover"] and r["reader_before_repair"].startswith("refused")
                       and rep["rc"] == 0 and same and r["inspect_after_repair_clean"])
        log(f"  leftover rows, {name}: inspect {'reports them' if r['inspect_reports_leftover'] else 'SILENT'}, "
            f"reader before repair {r['reader_before_repair'][:60]!r}, repair exit {rep['rc']}, reader after: "
            f"{r['reader_after_repair']}, identical {same}")
        out.append(r)
    return out


def store_damage_markdown(cor: dict) -> str:
    """The store-damage table of a corruption section (its JSON), in Markdown."""
    def yn(b: Any) -> str:
        return "yes" if b else "**no**"

    st, b = cor.get("startup", {}), cor.get("bounds", {})
    lines = [f"Bounds: each refusal within {b.get('seconds')} s and {b.get('rss_mb')} MiB; a hang is killed after "
             f"{b.get('hang_timeout_s')} s. `vmerpo inspect`: the process's wall time and peak RSS (its own "
             f"wait4 ru_maxrss), in brackets above the start-up of `vmerpo inspect` on a missing store "
             f"({st.get('seconds')} s, {st.get('peak_rss_mb')} MiB), which imports as much and refuses at once. "
             "API and append: the call alone, in a fresh interpreter after an undamaged open+verify; memory = "
             "its peak RSS minus the RSS before it (VmHWM reset by /proc/self/clear_refs), then the tracemalloc "
             "peak (Python and numpy allocations) of a second, identical call.", "",
             "| case | tool | exit | one line | names the problem | time (s) | memory (MiB) | clean | message |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in cor.get("cases", []):
        if c["target"] == "onnx":
            continue
        if c["tool"] == "vmerpo inspect":
            t = f"{c['seconds']:.2f} ({c['seconds_over_startup']:+.2f})"
            m = "?" if c["peak_rss_mb"] is None else f"{c['peak_rss_mb']:.0f} ({c['rss_over_startup_mb']:+.1f})"
        else:
            t = f"{c['seconds']:.4f}"
            m = "?" if c.get("rss_growth_mb") is None else f"{c['rss_growth_mb']:+.1f}"
            if c.get("traced_peak_mb") is not None:
                m += f"; {c['traced_peak_mb']:.2f} traced"
        msg = re.sub(r"\S*\.zarr: ", "", c["message"])  # the store's path: one per case, in the JSON
        if c["target"] == "append":
            msg += (f" [store files changed: {len(c['store_files_changed'])}, files outside changed: "
                    f"{len(c['outside_files_changed'])}]")
        msg = msg.replace("|", "\\|")
        lines.append(f"| {c['case']} | {c['tool']} | {c['exit_code']} | {yn(c['one_line'])} "
                     f"| {yn(c['names_problem'])} | {t} | {m} | {yn(c['refused_cleanly'])} | {msg[:160]} |")
    rep = cor.get("leftover_repair", [])
    if rep:
        lines += ["", "| leftover rows | inspect reports them | reader before repair | `vmerpo repair` exit "
                  "| reader after repair | exactly the committed episodes | inspect clean after |",
                  "|---|---|---|---|---|---|---|"]
        for r in rep:
            before = "refused" if r["reader_before_repair"].startswith("refused") else "**read**"
            lines.append(f"| {r['case']} | {yn(r['inspect_reports_leftover'])} | {before} | {r['repair_exit_code']} "
                         f"| {r['reader_after_repair']} | {yn(r['reader_sees_exactly_the_committed_episodes'])} "
                         f"| {yn(r['inspect_after_repair_clean'])} |")
    return "\n".join(lines)


def corruption_section(wd: Path, counts: dict, rng: random.Random, log: Callable[[str], None]) -> dict:
    from learning.export import make_test_policy
    from learning.runtime.policy_runtime import PolicyRuntime

    store = store_damage_cases(wd, rng)
    cases: list[dict] = store["cases"]
    controls = dict(store["controls"])
    leftover = leftover_repair_checks(wd, Path(store["good_store"]), log=log)

    good = wd / "good.onnx"
    make_test_policy(good, policy_spec_for_reach(), seed=0)
    eval_args = ["--env", "reach-v3", "--tasks", "40", "--episodes", "1", "--max-episode-steps", "3",
                 "--no-progress"]
    control = run(vmerpo_cmd("eval", "--policy", str(good), *eval_args))
    controls["eval good policy"] = control.returncode == 0
    n_eval = counts["eval_cases"] if counts["eval_cases"] is not None else len(ONNX_CASES)
    api: dict[str, Any]
    for j, (name, (damage_onnx, words)) in enumerate(ONNX_CASES.items()):
        path = wd / f"policy_{j}.onnx"
        damage_onnx(good, path, rng)
        try:
            rt = PolicyRuntime(path, providers="cpu")
            rt.check_compatible(image_size=64, action_names=["ee_dx", "ee_dy", "ee_dz", "gripper_effort"],
                                action_type="ee_delta", control_hz=80.0)
            api = {"exit_code": 0, "one_line": False, "message": "accepted"}
        except ValueError as e:
            api = {"exit_code": 2, "one_line": "\n" not in str(e), "message": str(e)}
        except Exception as e:  # noqa: BLE001
            api = {"exit_code": 1, "one_line": False, "message": f"{type(e).__name__}: {e}"}
        cases.append({"target": "onnx", "case": name, "tool": "PolicyRuntime", **api,
                      "names_problem": _check_message(api["message"], words)})
        if j < n_eval or j == len(ONNX_CASES) - 1:
            proc = run(vmerpo_cmd("eval", "--policy", str(path), *eval_args))
            one, line = one_line_error(proc.stderr)
            cases.append({"target": "onnx", "case": name, "tool": "vmerpo eval", "exit_code": proc.returncode,
                          "one_line": one, "names_problem": _check_message(line, words), "message": line})
    for c in cases:
        if "refused_cleanly" not in c:  # the store rows also carry bounds and (appends) changes
            c["refused_cleanly"] = bool(c["exit_code"] == 2 and c["one_line"] and c["names_problem"])
    bad = [c for c in cases if not c["refused_cleanly"]]
    changed = [c for c in cases if c.get("store_files_changed") or c.get("outside_files_changed")]
    log(f"  corruption: {len(cases) - len(bad)}/{len(cases)} refused with one line naming the problem"
        + "".join(f"\n    NOT CLEAN: {c['target']} {c['case']} via {c['tool']}: exit {c['exit_code']}, "
                  f"{'out of bounds, ' if not c.get('within_bounds', True) else ''}"
                  f"{c['message'][:160]!r}" for c in bad))
    out = {"cases": cases, "controls": controls, "startup": store["startup"], "bounds": store["bounds"],
           "leftover_repair": leftover, "refused_with_one_line_error": len(cases) - len(bad),
           "not_refused_cleanly": len(bad), "appends_changing_files": len(changed),
           "errors": [f"leftover rows, {r['case']}: {r}" for r in leftover if not r["ok"]]}
    log(store_damage_markdown(out))
    return out


# -- (d) policy_node under malformed input -----------------------------------------------------
def fuzz_images(client: Any, rng: random.Random, n: int) -> list[Any]:
    """Random malformed sensor_msgs/Image: sizes, steps, encodings and data that disagree."""
    from robot_nodes.testing import image_message

    encodings = ["rgb8", "bgr8", "mono8", "rgba8", "16UC1", "32FC1", "bayer_rggb8", "", "x" * 300, "yuv422"]
    out = []
    for _ in range(n):
        m = image_message(client, 1, 1)
        m.height, m.width = rng.choice([0, 1, 7, 84, 480, 70000]), rng.choice([0, 1, 9, 84, 640, 70000])
        m.encoding = rng.choice(encodings)
        m.step = rng.choice([0, 1, m.width, m.width * 3, m.width * 3 + 5, 2**31 - 1])
        m.is_bigendian = rng.choice([0, 1])
        m.data = rng.randbytes(rng.choice([0, 1, 100, 84 * 84 * 3, 84 * 84 * 3 - 1, 300_000]))
        out.append(m)
    return out


def ros_section(wd: Path, counts: dict, rng: random.Random, log: Callable[[str], None]) -> dict:
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from learning.export import make_test_policy
    from learning.runtime.spec import PolicySpec
    from robot_nodes.netsafe import inet_sockets_of_this_process
    from robot_nodes.testing import (
        JointStateStream,
        NodeProcess,
        enable_policy,
        ros_context,
        send_malformed_inputs,
        wait_for,
    )

    policy = wd / "joint_position.onnx"
    low, high = np.array([-2.0, -1.0]), np.array([2.0, 1.0])
    make_test_policy(policy, PolicySpec(
        image_size=64, action_names=["j0", "j1"], action_low=low.tolist(), action_high=high.tolist(),
        deter_size=32, stoch_size=8, action_type="joint_position", hold_action="current position",
        state_names=["j0", "j1"], uses_state=True, control_hz=30.0), seed=1)
    out: dict[str, Any]
    out = {"trials": 0, "policy_node_crashes": 0, "unclean_exits": 0, "nonfinite_commands": 0,
           "out_of_limit_commands": 0, "commands": 0, "malformed_sent": 0, "rejected_reported": 0,
           "rejections_missing": 0, "network_violations": 0, "errors": []}
    with ros_context("faults_attacker") as (_, _, (client,)):
        diags: list = []
        client.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
        for trial in range(counts["ros_trials"]):
            ns = f"/faults_pol_{trial}"
            node = NodeProcess("robot_nodes.policy_node",
                               ["--params-file", "config/policy_node.yaml", "-p", f"policy:={policy}",
                                "-p", "obs_timeout_s:=0.3", "-p", "diagnostics_period_s:=0.2",
                                "-r", f"__ns:={ns}"], wd / f"policy_node_{trial}.log")
            rec: list = []
            sub = client.create_subscription(Float64MultiArray, f"{ns}/command", rec.append, 1000)
            img_pub = client.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
            js_pub = client.create_publisher(JointState, f"{ns}/joint_states", qos_profile_sensor_data)
            try:
                if not wait_for(lambda p=img_pub:  # type: ignore[misc]
                                p.get_subscription_count() > 0, 60):
                    out["errors"].append(f"trial {trial}: policy_node did not start: {node.output()[-300:]}")
                    out["policy_node_crashes"] += 1
                    continue
                out["trials"] += 1
                with JointStateStream(client, js_pub, ["j0", "j1"], [0.5, -0.25]) as joints:
                    enabled = enable_policy(client, f"{ns}/policy_node/enable")
                    assert enabled.success, enabled.message
                    n_reject = send_malformed_inputs(client, img_pub, joints, size=84, burst=200)
                    fuzz = fuzz_images(client, rng, counts["fuzz_images"])
                    for m in fuzz:
                        img_pub.publish(m)
                        time.sleep(0.005)
                    for _ in range(5):  # still acting on good frames afterwards
                        from robot_nodes.testing import image_message

                        img_pub.publish(image_message(client, 84, 84))
                        time.sleep(0.03)
                    time.sleep(0.5)
                    out["malformed_sent"] += n_reject + len(fuzz)
                alive = node.alive()
                ok = wait_for(lambda n_reject=n_reject: any(  # type: ignore[misc]
                    int({kv.key: kv.value for kv in st.values}.get("rejected_count", 0)) >= n_reject
                    for d in diags[-5:] for st in d.status if st.hardware_id == str(policy)), 3)
                if not ok:
                    out["rejections_missing"] += 1
                acts = np.array([m.data for m in rec]) if rec else np.zeros((0, 2))
                out["commands"] += len(acts)
                out["nonfinite_commands"] += int((~np.isfinite(acts)).any(axis=1).sum()) if len(acts) else 0
                fin = acts[np.isfinite(acts).all(axis=1)] if len(acts) else acts
                out["out_of_limit_commands"] += int(((fin < low - 1e-6) | (fin > high + 1e-6)).any(axis=1).sum())
                rc = node.stop(signal.SIGINT)
                if not alive:
                    out["policy_node_crashes"] += 1
                    out["errors"].append(f"trial {trial}: policy_node died: {node.output()[-500:]}")
                elif rc != 0 or "Traceback" in node.output():
                    out["unclean_exits"] += 1
                    out["errors"].append(f"trial {trial}: exit {rc}: {node.output()[-500:]}")
            except AssertionError as e:
                out["errors"].append(f"trial {trial}: {e}")
                out["policy_node_crashes"] += int(not node.alive())
            finally:
                node.stop(signal.SIGKILL)
                client.destroy_subscription(sub)
                client.destroy_publisher(img_pub)
                client.destroy_publisher(js_pub)
                if "IP sockets" in node.output():
                    out["network_violations"] += 1
        for d in diags:
            for st in d.status:
                if st.hardware_id == str(policy):
                    out["rejected_reported"] = max(out["rejected_reported"], int(
                        {kv.key: kv.value for kv in st.values}.get("rejected_count", 0)))
        if inet_sockets_of_this_process():
            out["network_violations"] += 1
    log(f"  policy_node: {out['trials']} trials, crashes {out['policy_node_crashes']}, "
        f"{out['commands']} commands ({out['nonfinite_commands']} non-finite, "
        f"{out['out_of_limit_commands']} out of limits)")
    return out


# -- (e) recorder_node stopped mid-take, and on a full disk --------------------------------------
def stops_section(wd: Path, counts: dict, rng: random.Random, log: Callable[[str], None]) -> dict:
    """recorder_node stopped with SIGINT or SIGTERM in the middle of a take: the take must be
    committed, marked interrupted; no committed episode may change. Then a store on a full
    disk (a small tmpfs in the node's own mount namespace): the node must stay up and keep
    every committed episode."""
    from std_srvs.srv import SetBool, Trigger

    from learning.store import EpisodeStore
    from robot_nodes.netsafe import inet_sockets_of_this_process
    from robot_nodes.testing import NodeProcess, call, ros_context, small_disk_prefix, wait_for

    store_path = wd / "stops.zarr"
    digests: dict[int, str] = {}
    out: dict[str, Any] = {"trials": 0, "signals": {}, "takes_lost": 0, "takes_not_marked_interrupted": 0,
                           "changed_episodes": 0, "misaligned_episodes": 0, "unclean_exits": 0,
                           "network_violations": 0, "errors": []}
    tick = 0
    with ros_context("faults_stop_driver") as (_, _, (drv,)):
        for trial in range(counts["stop_trials"]):
            sig = (signal.SIGINT, signal.SIGTERM)[trial % 2]
            ns = f"/faults_stop_{trial}"
            node = NodeProcess("robot_nodes.recorder_node",
                               ["--params-file", "config/recorder_node.yaml", "-p", f"store:={store_path}",
                                "-p", "task_id:=7", "-r", f"__ns:={ns}"], wd / f"stop_{trial}.log")
            ticker = _Ticker(drv, ns)
            srv = f"{ns}/recorder_node"
            try:
                if not wait_for(ticker.connected, 60) or not node.alive():
                    out["errors"].append(f"trial {trial}: recorder did not start: {node.output()[-300:]}")
                    continue
                before = EpisodeStore.open(store_path).n_episodes if store_path.exists() else 0
                assert call(drv, Trigger, f"{srv}/start_episode", timeout=20).success
                first, n = tick, rng.randint(3, 12)
                for _ in range(n):
                    ticker.tick(tick)
                    tick += 1
                time.sleep(rng.uniform(0.05, 0.3))  # the last command is in; the take is open
                rc = node.stop(sig)
                out["trials"] += 1
                out["signals"][sig.name] = out["signals"].get(sig.name, 0) + 1
                if rc != 0 or "Traceback" in node.output():
                    out["unclean_exits"] += 1
                    out["errors"].append(f"trial {trial}: exit {rc}: {node.output()[-300:]}")
                store = EpisodeStore.open(store_path)
                if store.n_episodes != before + 1:
                    out["takes_lost"] += 1
                    continue
                i = store.n_episodes - 1
                if (store.provenance("ended_by")[i] != sig.name or bool(store.provenance("success_known")[i])
                        or len(store.episode(i)["action"]) != n):
                    out["takes_not_marked_interrupted"] += 1
                check_committed(store, digests, {i: (first, n)}, out)
            except AssertionError as e:
                out["errors"].append(f"trial {trial}: {e}")
            finally:
                node.stop(signal.SIGKILL)
                ticker.close()
                if "IP sockets" in node.output():
                    out["network_violations"] += 1

        # a full disk
        disk = wd / "disk"
        disk.mkdir(exist_ok=True)
        prefix = small_disk_prefix(disk, 6, 3)
        full: dict[str, Any] = {"ran": prefix is not None}
        out["full_disk"] = full
        if prefix is None:
            full["skipped"] = "no mount namespace here (needs root and unshare)"
        else:
            node = NodeProcess("robot_nodes.recorder_node",
                               ["--params-file", "config/recorder_node.yaml", "-p", f"store:={disk / 'r.zarr'}",
                                "-p", "task_id:=7", "-r", "__ns:=/faults_disk"], wd / "full_disk.log", prefix)
            ticker = _Ticker(drv, "/faults_disk")
            srv = "/faults_disk/recorder_node"
            view = f"/proc/{node.proc.pid}/root{disk / 'r.zarr'}"
            try:
                assert wait_for(ticker.connected, 60), node.output()[-300:]
                committed = []
                for _ in range(2):
                    assert call(drv, Trigger, f"{srv}/start_episode", timeout=20).success
                    for _ in range(5):
                        ticker.tick(tick, noise=True)
                        tick += 1
                    assert call(drv, SetBool, f"{srv}/end_episode", SetBool.Request(data=True), timeout=20).success
                s = EpisodeStore.open(view)
                committed = [episode_digest(s, j) for j in range(s.n_episodes)]
                assert call(drv, Trigger, f"{srv}/start_episode", timeout=20).success
                for _ in range(300):  # ~3.6 MB of incompressible frames on a disk with < 3 MB free
                    ticker.tick(tick, noise=True)
                    tick += 1
                res = call(drv, SetBool, f"{srv}/end_episode", SetBool.Request(data=True), timeout=20)
                full["take_refused_on_full_disk"] = not res.success
                full["node_alive"] = node.alive()
                full["no_space_logged"] = "No space left on device" in node.output()
                s = EpisodeStore.open(view)
                full["committed_episodes_lost"] = sum(
                    j >= s.n_episodes or episode_digest(s, j) != d for j, d in enumerate(committed))
                full["rc"] = node.stop(signal.SIGINT)
            except AssertionError as e:
                out["errors"].append(f"full disk: {e}")
            finally:
                node.stop(signal.SIGKILL)
                ticker.close()
            if not (full.get("node_alive") and full.get("take_refused_on_full_disk")
                    and full.get("committed_episodes_lost") == 0 and full.get("rc") == 0):
                out["errors"].append(f"full disk: {full}")
        if inet_sockets_of_this_process():
            out["network_violations"] += 1
    log(f"  recorder stops: {out['trials']} trials {out['signals']}, takes lost {out['takes_lost']}, "
        f"not marked {out['takes_not_marked_interrupted']}, committed changed {out['changed_episodes']}; "
        f"full disk {out['full_disk']}")
    return out


# -- (f) policy_node on a robot's bad day --------------------------------------------------------
def robot_section(wd: Path, counts: dict, rng: random.Random, log: Callable[[str], None]) -> dict:
    """policy_node in its own process: inference failures injected on live frames (a policy
    that fails inside onnxruntime on all-white frames); NaN, mismatched and wild joint states
    on a position interface with a rate limit; frozen, future and backwards camera stamps."""
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from learning.export import make_test_policy
    from learning.runtime.spec import PolicySpec
    from robot_nodes.conversions import array_to_image, frame_stamp_of, ns_to_stamp, stamp_to_ns
    from robot_nodes.netsafe import inet_sockets_of_this_process
    from robot_nodes.testing import (
        JointStateStream,
        NodeProcess,
        enable_policy,
        make_failing_policy,
        ros_context,
        wait_for,
    )

    spec = dict(image_size=64, action_names=["j0", "j1"], action_low=[-2.0, -1.0], action_high=[2.0, 1.0],
                deter_size=32, stoch_size=8, action_type="joint_position", hold_action="current position",
                state_names=["j0", "j1"], uses_state=True, control_hz=30.0)
    policy = wd / "position.onnx"
    make_test_policy(policy, PolicySpec(**spec), seed=2)  # type: ignore[arg-type]
    failing = make_failing_policy(wd / "position.onnx", wd / "fails_on_white.onnx")
    max_delta, n_error, n_disable = 0.05, 3, 8
    out: dict[str, Any] = {"node_exits": 0, "network_violations": 0, "errors": []}

    def frame(client, value=None, stamp_ns=None):
        rng_px = np.random.default_rng(rng.randint(0, 2**31))
        px = (rng_px.integers(0, 255, (64, 64, 3), dtype=np.uint8) if value is None
              else np.full((64, 64, 3), value, np.uint8))
        m = Image()
        array_to_image(px, m)
        if stamp_ns is None:
            m.header.stamp = client.get_clock().now().to_msg()
        else:
            ns_to_stamp(stamp_ns, m.header.stamp)
        return m

    with ros_context("faults_robot") as (_, _, (client,)):
        diags: list = []
        client.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 200)
        for case, pol in (("inference", failing), ("joints", policy), ("stamps", policy)):
            ns = f"/faults_robot_{case}"
            node = NodeProcess("robot_nodes.policy_node",
                               ["--params-file", "config/policy_node.yaml", "-p", f"policy:={pol}",
                                "-p", "obs_timeout_s:=1.0", "-p", "diagnostics_period_s:=0.2",
                                "-p", f"max_delta:=[{max_delta}]", "-p", f"failures_for_error:={n_error}",
                                "-p", f"max_consecutive_failures:={n_disable}", "-p", "max_frame_age_s:=5.0",
                                "-r", f"__ns:={ns}"], wd / f"robot_{case}.log")
            rec: list = []
            sub = client.create_subscription(Float64MultiArray, f"{ns}/command",
                                             lambda m, rec=rec: rec.append((time.monotonic(), m)), 1000)
            img = client.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
            jsp = client.create_publisher(JointState, f"{ns}/joint_states", qos_profile_sensor_data)
            res: dict[str, Any] = {}
            out[case] = res
            try:
                assert wait_for(lambda img=img: img.get_subscription_count() > 0, 60), node.output()[-300:]  # type: ignore[misc]
                with JointStateStream(client, jsp, ["j0", "j1"], [0.5, -0.25]) as joints:
                    time.sleep(0.3)
                    enabled = enable_policy(client, f"{ns}/policy_node/enable")
                    assert enabled.success, enabled.message
                    if case == "inference":
                        injected = 0
                        stamps = []
                        for _ in range(counts["robot_frames"]):  # mostly good, single failures
                            white = rng.random() < 0.2
                            m = frame(client, 255 if white else None)
                            img.publish(m)
                            if white:
                                injected += 1
                                stamps.append(stamp_to_ns(m.header.stamp))
                            time.sleep(1 / 30)
                        for _ in range(3):  # good frames: the failures in a row below start from 0
                            img.publish(frame(client))
                            time.sleep(1 / 30)
                        time.sleep(0.2)
                        for _ in range(n_disable):  # failures in a row: ERROR, then disabled
                            m = frame(client, 255)
                            img.publish(m)
                            injected += 1
                            stamps.append(stamp_to_ns(m.header.stamp))
                            time.sleep(1 / 30)
                        time.sleep(0.5)
                        answered = {frame_stamp_of(m) for _, m in rec}
                        failed_stamps = sum(s in answered for s in stamps)
                        levels = [(st.level, st.message) for d in diags for st in d.status
                                  if st.hardware_id == str(pol)]
                        res.update(injected=injected, holds_answering_failures=failed_stamps,
                                   error_reported=any(lv == DiagnosticStatus.ERROR and "in a row" in msg
                                                      for lv, msg in levels),
                                   disabled_itself=any(lv == DiagnosticStatus.ERROR and "disabled itself" in msg
                                                       for lv, msg in levels))
                    elif case == "joints":
                        kinds = {"nan": 0, "mismatched": 0, "wild": 0, "good": 0}
                        sent: list[int] = []
                        sent_at: list[float] = []
                        t_end = time.monotonic() + counts["robot_seconds"]
                        while time.monotonic() < t_end:
                            r = rng.random()
                            if r < 0.2:
                                joints.values, joints.names, kind = [float("nan"), 0.0], ["j0", "j1"], "nan"
                            elif r < 0.3:
                                joints.values, joints.names, kind = [0.5, -0.25], ["j0", "jx"], "mismatched"
                            elif r < 0.4:
                                joints.values, joints.names, kind = [rng.uniform(-50, 50), 40.0], ["j0", "j1"], "wild"
                            else:
                                joints.values, joints.names, kind = [0.5, -0.25], ["j0", "j1"], "good"
                            kinds[kind] += 1
                            time.sleep(0.02)
                            m = frame(client)
                            sent.append(stamp_to_ns(m.header.stamp))
                            img.publish(m)
                            sent_at.append(time.monotonic())
                            time.sleep(1 / 30 - 0.02)
                        joints.values, joints.names = [0.5, -0.25], ["j0", "j1"]
                        time.sleep(0.3)
                        acts = np.array([m.data for _, m in rec])
                        times = np.array([t for t, _ in rec])
                        steps = np.abs(np.diff(acts, axis=0)) if len(acts) > 1 else np.zeros((0, 2))
                        gaps = np.diff(times) if len(times) > 1 else np.zeros(0)
                        frame_gaps = np.diff(sent_at) if len(sent_at) > 1 else np.zeros(0)
                        answered = {frame_stamp_of(m) for _, m in rec}
                        res.update(frames=sum(kinds.values()), joint_states=kinds, commands=len(acts),
                                   frames_unanswered=sum(s not in answered for s in sent),
                                   beyond_rate_limit=int((steps > max_delta + 1e-6).any(axis=1).sum()),
                                   non_finite=int((~np.isfinite(acts)).any(axis=1).sum()),
                                   max_gap_between_commands_s=round(float(gaps.max()), 3) if len(gaps) else None,
                                   # the camera's own gaps: a command cannot come sooner than its frame
                                   max_gap_between_frames_s=round(float(frame_gaps.max()), 3)
                                   if len(frame_gaps) else None)
                    else:
                        first = frame(client)
                        img.publish(first)
                        time.sleep(0.1)
                        frozen = stamp_to_ns(first.header.stamp) + 1_000_000  # then it froze
                        for _ in range(10):  # a camera whose stamp froze: new pixels each time
                            img.publish(frame(client, stamp_ns=frozen))
                            time.sleep(1 / 30)
                        for _ in range(5):  # a clock jump: 10 s in the future
                            img.publish(frame(client, stamp_ns=client.get_clock().now().nanoseconds + 10**10))
                            time.sleep(1 / 30)
                        for _ in range(5):  # stamps going back
                            img.publish(frame(client, stamp_ns=frozen - 10**9))
                            time.sleep(1 / 30)
                        time.sleep(0.5)
                        last = {kv.key: kv.value for d in diags for st in d.status
                                if st.hardware_id == str(pol) for kv in st.values}
                        res.update(frozen_sent=10, frozen_acted=int(last.get("ticks", 0)) - 1,
                                   future_sent=5, future_rejected=int(last.get("future_stamp_count", 0)),
                                   backwards_sent=5, backwards_rejected=int(last.get("backwards_stamp_count", 0)))
                res["alive"] = node.alive()
                rc = node.stop(signal.SIGINT)
                if not res["alive"] or rc != 0 or "Traceback" in node.output():
                    out["node_exits"] += 1
                    out["errors"].append(f"{case}: node exit {rc}: {node.output()[-300:]}")
            except AssertionError as e:
                out["errors"].append(f"{case}: {e}")
            finally:
                node.stop(signal.SIGKILL)
                client.destroy_subscription(sub)
                client.destroy_publisher(img)
                client.destroy_publisher(jsp)
                if "IP sockets" in node.output():
                    out["network_violations"] += 1
        if inet_sockets_of_this_process():
            out["network_violations"] += 1
    inf, jo, st = out.get("inference", {}), out.get("joints", {}), out.get("stamps", {})
    if inf and (inf.get("holds_answering_failures") != inf.get("injected") or not inf.get("error_reported")
                or not inf.get("disabled_itself")):
        out["errors"].append(f"inference failures: {inf}")
    if jo and (jo.get("beyond_rate_limit") or jo.get("non_finite") or jo.get("frames_unanswered")):
        out["errors"].append(f"joint states: {jo}")
    if st and (st.get("frozen_acted") != 10 or st.get("future_rejected") != 5 or st.get("backwards_rejected") != 5):
        out["errors"].append(f"stamps: {st}")
    log(f"  robot: inference {inf}\n  joints {jo}\n  stamps {st}")
    return out


# -- the summary -------------------------------------------------------------------------------
def summarize(sections: dict[str, dict], counts: dict) -> dict[str, Any]:
    """Top-level counts (all must be zero) and whether the minimum trial counts were met."""
    tr = sections.get("training", {}).get("runs", {})
    col, rec = sections.get("collection", {}), sections.get("recording", {})
    cor, ros = sections.get("corruption", {}), sections.get("ros", {})
    stops, robot = sections.get("stops", {}), sections.get("robot", {})
    s: dict[str, Any] = {
        "lost_committed_episodes": col.get("lost_committed_episodes", 0) + rec.get("lost_committed_episodes", 0),
        "corrupted_committed_episodes": (col.get("corrupted_episodes", 0) + rec.get("changed_episodes", 0)
                                         + rec.get("misaligned_episodes", 0) + stops.get("changed_episodes", 0)
                                         + stops.get("misaligned_episodes", 0)),
        "takes_lost_to_sigint_sigterm": stops.get("takes_lost", 0) + stops.get("takes_not_marked_interrupted", 0),
        "full_disk_committed_lost": stops.get("full_disk", {}).get("committed_episodes_lost", 0),
        "policy_node_exits_under_faults": robot.get("node_exits", 0),
        "inference_failures_injected": robot.get("inference", {}).get("injected", 0),
        "inference_failures_held": robot.get("inference", {}).get("holds_answering_failures", 0),
        "commands_beyond_rate_limit": robot.get("joints", {}).get("beyond_rate_limit", 0),
        "frames_unanswered_bad_joints": robot.get("joints", {}).get("frames_unanswered", 0),
        "stop_trials": stops.get("trials", 0),
        "unopenable_stores": col.get("unopenable_stores", 0) + rec.get("unopenable_stores", 0),
        "orphan_workers": col.get("orphan_workers", 0),
        "unrecoverable_runs": sum(not r.get("recovered", False) for r in tr.values()),
        "policy_node_crashes": (ros.get("policy_node_crashes", 0) + ros.get("unclean_exits", 0)
                                + robot.get("node_exits", 0)),
        "unsafe_commands": ros.get("nonfinite_commands", 0) + ros.get("out_of_limit_commands", 0),
        "refused_with_one_line_error": cor.get("refused_with_one_line_error", 0),
        "not_refused_cleanly": cor.get("not_refused_cleanly", 0),
        "appends_changing_files": cor.get("appends_changing_files", 0),
        "network_violations": (rec.get("network_violations", 0) + ros.get("network_violations", 0)
                               + stops.get("network_violations", 0) + robot.get("network_violations", 0)),
        "training_kills": sum(r.get("kills_after_progress", 0) + r.get("kills_blind", 0) for r in tr.values()),
        "collection_trials": col.get("trials", 0),
        "recording_trials": rec.get("trials", 0),
        "policy_node_trials": ros.get("trials", 0),
    }
    short: list[str] = []
    if "training" in sections:
        short += [f"training run {n}: {r.get('kills_after_progress', 0)} kills after progress < "
                  f"{counts['train_kills']}" for n, r in tr.items()
                  if r.get("kills_after_progress", 0) < counts["train_kills"]]
    for name, key, want in (("collection", "collection_trials", "collect_trials"),
                            ("recording", "recording_trials", "record_trials"),
                            ("ros", "policy_node_trials", "ros_trials"), ("stops", "stop_trials", "stop_trials")):
        if name in sections and s[key] < counts[want]:
            short.append(f"{name}: {s[key]} trials < {counts[want]}")
    if "collection" in sections and not col.get("final_identical_to_uninterrupted", False):
        short.append("collection: the resumed store differs from the uninterrupted one")
    if "corruption" in sections and not all(cor.get("controls", {}).values()):
        short.append(f"corruption controls failed: {cor.get('controls')}")
    if "ros" in sections and ros.get("rejections_missing", 0):
        short.append("ros: policy_node did not report its rejections")
    for name in SECTIONS:
        for err in sections.get(name, {}).get("errors", []):
            short.append(f"{name}: {err}")
    zero = ("lost_committed_episodes", "corrupted_committed_episodes", "unopenable_stores", "orphan_workers",
            "unrecoverable_runs", "policy_node_crashes", "unsafe_commands", "not_refused_cleanly",
            "appends_changing_files",
            "network_violations", "takes_lost_to_sigint_sigterm", "full_disk_committed_lost",
            "commands_beyond_rate_limit", "frames_unanswered_bad_joints")
    s["problems"] = [f"{k} = {s[k]}" for k in zero if s[k]] + short
    s["ok"] = not s["problems"]
    return s


def format_table(summary: dict[str, Any]) -> str:
    rows = [("lost committed episodes", "lost_committed_episodes", "0"),
            ("committed episodes changed or misaligned", "corrupted_committed_episodes", "0"),
            ("stores that failed to open after a kill", "unopenable_stores", "0"),
            ("collection workers outliving their writer", "orphan_workers", "0"),
            ("training runs not recovered exactly", "unrecoverable_runs", "0"),
            ("policy_node crashes / unclean exits", "policy_node_crashes", "0"),
            ("non-finite or out-of-limit commands", "unsafe_commands", "0"),
            ("corrupt inputs refused with one line", "refused_with_one_line_error", "all"),
            ("corrupt inputs not refused cleanly", "not_refused_cleanly", "0"),
            ("appends to damaged stores changing a file", "appends_changing_files", "0"),
            ("IP sockets opened by ROS processes", "network_violations", "0"),
            ("training kills (SIGKILL)", "training_kills", ""),
            ("collection kill trials", "collection_trials", ""),
            ("recorder kill trials", "recording_trials", ""),
            ("policy_node attack trials", "policy_node_trials", ""),
            ("recorder SIGINT/SIGTERM takes lost or unmarked", "takes_lost_to_sigint_sigterm", "0"),
            ("recorder SIGINT/SIGTERM mid-take trials", "stop_trials", ""),
            ("committed episodes lost on a full disk", "full_disk_committed_lost", "0"),
            ("inference failures injected / held", "inference_failures_injected", ""),
            ("  of which answered with a hold", "inference_failures_held", "all"),
            ("commands beyond the rate limit (bad joints)", "commands_beyond_rate_limit", "0"),
            ("frames left without a command (bad joints)", "frames_unanswered_bad_joints", "0")]
    w = max(len(r[0]) for r in rows)
    lines = [f"{'check':<{w}}  {'result':>7}  target", "-" * (w + 18)]
    lines += [f"{label:<{w}}  {summary.get(key, 0)!s:>7}  {target}" for label, key, target in rows]
    lines.append("-" * (w + 18))
    lines.append("OK" if summary["ok"] else "FAILED:\n  " + "\n  ".join(summary["problems"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vmerpo bench faults", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Sections: " + ", ".join(SECTIONS) + ". Exit code 0 when every "
                                 "count is zero and the trial minimums were met, 1 otherwise.")
    ap.add_argument("--out", default="results/faults.json", help="JSON summary (default results/faults.json)")
    ap.add_argument("--quick", action="store_true", help="reduced counts (CI): " + json.dumps(QUICK))
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times and damage")
    ap.add_argument("--workdir", help="keep the stores, runs and logs here (default: a temp dir, removed)")
    ap.add_argument("--table", metavar="FAULTS.json", help="print the store-damage table (Markdown) of an "
                    "earlier run's JSON and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(store_damage_markdown(json.loads(Path(args.table).read_text())["sections"].get("corruption", {})))
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    ensure_safe_before_rclpy()  # before anything can import rclpy; children inherit it
    os.environ.setdefault("MUJOCO_GL", "egl")
    counts = QUICK if args.quick else FULL
    wd = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vmerpo-faults-"))
    wd.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    fns = {"training": training_section, "collection": collection_section, "recording": recording_section,
           "corruption": corruption_section, "ros": ros_section, "stops": stops_section, "robot": robot_section}
    sections: dict[str, dict] = {}
    t0 = time.perf_counter()
    try:
        for name in SECTIONS:
            if name not in only:
                continue
            print(f"[{name}]", flush=True)
            t = time.perf_counter()
            sub = wd / name
            sub.mkdir(exist_ok=True)
            sections[name] = fns[name](sub, counts, rng, lambda m: print(m, flush=True))
            sections[name]["seconds"] = round(time.perf_counter() - t, 1)
    finally:
        if not args.workdir:
            shutil.rmtree(wd, ignore_errors=True)
    summary = summarize(sections, counts)
    result = {"summary": summary, "quick": args.quick, "counts": counts, "seed": args.seed,
              "seconds": round(time.perf_counter() - t0, 1), "sections": sections,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_1m": round(os.getloadavg()[0], 2)}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(format_table(summary))
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
