"""ROS 2 latency benchmark: image publish -> command received, policy_node vs a bare relay.

    vmerpo bench ros-latency [--policy policy.onnx] [--duration 60] --out results/ros_latency.json

For each input size (84x84 and 640x480 rgb8 by default) a publisher in this process sends
images at `--hz` for `--duration` seconds to, in turn, `relay_node` (answers at once, no
decoding or inference) and `policy_node` (decode, the one preprocessing function,
onnxruntime, safety limiter), each in its own process over the same SHM transport. Every
command names the frame it answers, so latency is measured per frame and a frame without an
answer is a dropped tick. The policy's own inference time comes from its /diagnostics.
Target: policy p50 - relay p50 <= inference p50 + 1 ms, and zero dropped ticks; reported also
with the preprocessing time added to the inference time (resizing 640x480 to the model size
with INTER_AREA alone takes ~1 ms on these CPUs).

Stalls are attributed per run (`stalls`: runs of frames answered after 250 ms or never, with
the longest publish() call and the longest gap between two sends meanwhile): a long send gap
is a pause of this (publishing and measuring) process, not of the transport or the node. The
publisher skips ticks it missed, as a camera does (`publisher_skipped_ticks`), rather than
sending a backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from robot_nodes.netsafe import ensure_safe_before_rclpy, inet_sockets_of_this_process, safe_ros_env

ROOT = Path(__file__).resolve().parents[2]


def _percentiles(x: list[float]) -> dict[str, float | None]:
    if not x:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(x) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3)}


def _stalls(times: list[float], latency: list[float | None], publish_s: list[float],
            threshold_s: float = 0.25) -> list[dict[str, Any]]:
    """Runs of consecutive frames answered later than `threshold_s` or not at all, with what
    the publisher did meanwhile: a long publish() or a late loop points at the writer's
    process, a fast publish with late answers at the transport or the receiver."""
    out: list[dict[str, Any]] = []
    run: list[int] = []
    for i in range(len(times) + 1):
        bad = i < len(times) and ((lat := latency[i]) is None or lat > threshold_s)
        if bad:
            run.append(i)
            continue
        if run:
            lats = [v for j in run if (v := latency[j]) is not None]
            gaps = [times[j + 1] - times[j] for j in run if j + 1 < len(times)]
            out.append({"at_s": round(times[run[0]], 3), "frames": len(run),
                        "unanswered": len(run) - len(lats),
                        "max_latency_ms": round(max(lats) * 1e3, 1) if lats else None,
                        "max_publish_ms": round(max(publish_s[j] for j in run) * 1e3, 1),
                        "max_send_gap_ms": round(max(gaps) * 1e3, 1) if gaps else None})
            run = []
    return out[:20]


def _make_policy(path: Path, size: int) -> Path:
    """A random-weight policy with the deployed graph (needs torch; pass --policy otherwise)."""
    from learning.export import make_test_policy
    from learning.runtime.spec import PolicySpec

    spec = PolicySpec(image_size=size, action_names=["ee_dx", "ee_dy", "ee_dz", "gripper_effort"],
                      action_low=[-1.0] * 4, action_high=[1.0] * 4, deter_size=200, stoch_size=30,
                      action_type="ee_delta", hold_action=[0.0] * 4, control_hz=30.0)
    make_test_policy(path, spec)
    return path


class _Probe:
    """Publishes images at a fixed rate and times the commands that answer them."""

    def __init__(self, ctx: Any, image_topic: str, command_topic: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float64MultiArray

        self.node = rclpy.create_node("latency_probe", context=ctx)
        self.pub = self.node.create_publisher(Image, image_topic, qos_profile_sensor_data)
        self.sent: dict[int, float] = {}
        self.latency: dict[int, float] = {}
        self.extra = 0
        self.diag: dict[str, str] = {}
        self._lock = threading.Lock()
        self.node.create_subscription(Float64MultiArray, command_topic, self._on_command, 1000)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.Image = Image

    def _on_command(self, msg: Any) -> None:
        now = time.perf_counter()
        from robot_nodes.conversions import frame_stamp_of

        stamp = frame_stamp_of(msg)
        with self._lock:
            if stamp in self.sent and stamp not in self.latency:
                self.latency[stamp] = now - self.sent[stamp]
            else:
                self.extra += 1  # a hold, or an answer to a warm-up frame

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            if "policy" in st.name:
                self.diag = {kv.key: kv.value for kv in st.values}

    def run(self, width: int, height: int, hz: float, duration: float, warmup: float) -> dict[str, Any]:
        from robot_nodes.conversions import array_to_image, ns_to_stamp

        msg = self.Image()
        array_to_image(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8), msg)
        period = 1.0 / hz
        n_warm, n = int(warmup * hz), int(duration * hz)
        late = skipped = 0
        load_before = round(os.getloadavg()[0], 2)
        publish_s: list[float] = []  # time inside publish(): the writer side of a stall
        t_next = time.perf_counter()
        with self._lock:
            self.sent.clear()
            self.latency.clear()
        for i in range(n_warm + n):
            t_next += period
            stamp = time.time_ns()
            ns_to_stamp(stamp, msg.header.stamp)
            t = time.perf_counter()
            if i >= n_warm:
                with self._lock:
                    self.sent[stamp] = t
            self.pub.publish(msg)
            if i >= n_warm:
                publish_s.append(time.perf_counter() - t)
            sleep = t_next - time.perf_counter()
            if sleep > 0:
                time.sleep(sleep)
            else:
                late += 1
                # Like a camera, skip the ticks that passed instead of sending them back to back:
                # a backlog burst overruns the subscriber's depth-5 queue and turns a pause of
                # this process into dropped ticks and queueing latency charged to the node.
                missed = int(-sleep // period)
                t_next += missed * period
                skipped += missed
        time.sleep(0.5)  # the last answers
        with self._lock:
            sent = sorted(self.sent.items(), key=lambda kv: kv[1])
            lat = [self.latency[s] for s, _ in sent if s in self.latency]
            per_frame = [self.latency.get(s) for s, _ in sent]
            t0 = sent[0][1] if sent else 0.0
            times = [t - t0 for _, t in sent]
        pub = _percentiles(publish_s)
        return {"frames": len(sent), "answered": len(lat), "dropped_ticks": len(sent) - len(lat),
                "publisher_late": late, "publisher_skipped_ticks": skipped, **_percentiles(lat),
                "publish_p50_ms": pub["p50_ms"], "publish_max_ms": pub["max_ms"],
                "stalls": _stalls(times, per_frame, publish_s), "load_avg_1min_before": load_before}


def _start(module: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    f = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *args], cwd=ROOT, env=env,
                            stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(p: subprocess.Popen) -> None:
    import signal

    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def run_benchmark(policy: str | None, sizes: list[tuple[int, int]], hz: float, duration: float,
                  warmup: float = 2.0, log_dir: Path | None = None, progress=print) -> dict[str, Any]:
    ensure_safe_before_rclpy()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="vmerpo-ros-latency-"))
    policy = policy or str(_make_policy(log_dir / "bench_policy.onnx", 84))
    env = safe_ros_env(os.environ)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    probe = _Probe(ctx, "bench/image", "bench/command")
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(probe.node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    nodes = {
        "relay": ("robot_nodes.relay_node", ["-r", "__node:=bench_relay"]),
        "policy": ("robot_nodes.policy_node", [
            "-r", "__node:=bench_policy", "--params-file", str(ROOT / "config" / "policy_node.yaml"),
            "-p", f"policy:={policy}", "-p", "enable_on_activate:=true", "-p", "obs_timeout_s:=1.0",
            "-p", "diagnostics_period_s:=0.5"]),
    }
    results: dict[str, Any] = {}
    try:
        for w, h in sizes:
            key = f"{w}x{h}"
            results[key] = {}
            for name, (module, args) in nodes.items():
                remap = ["-r", "image:=bench/image", "-r", "command:=bench/command"]
                proc = _start(module, args + remap, env, log_dir / f"{name}_{key}.log")
                try:
                    deadline = time.monotonic() + 60
                    while probe.pub.get_subscription_count() == 0 or probe.node.count_publishers("bench/command") == 0:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise RuntimeError(f"{name} node did not come up: {(log_dir / f'{name}_{key}.log').read_text()[-1500:]}")
                        time.sleep(0.05)
                    time.sleep(0.5)
                    probe.diag = {}
                    r = probe.run(w, h, hz, duration, warmup)
                    if name == "policy":
                        t_end = time.monotonic() + 2
                        while not probe.diag and time.monotonic() < t_end:
                            time.sleep(0.05)
                        r["inference_p50_ms"] = float(probe.diag.get("inference_latency_p50_ms", "nan"))
                        r["inference_p99_ms"] = float(probe.diag.get("inference_latency_p99_ms", "nan"))
                        r["preprocess_p50_ms"] = float(probe.diag.get("preprocess_latency_p50_ms", "nan"))
                    r["node_alive"] = proc.poll() is None
                    results[key][name] = r
                    progress(f"{key} {name}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                             f"dropped {r['dropped_ticks']}/{r['frames']}")
                finally:
                    _stop(proc)
            rel, pol = results[key]["relay"], results[key]["policy"]
            if rel["p50_ms"] is not None and pol["p50_ms"] is not None:
                extra = pol["p50_ms"] - rel["p50_ms"]
                results[key]["extra_p50_ms"] = round(extra, 3)
                results[key]["target_extra_p50_ms"] = round(pol["inference_p50_ms"] + 1.0, 3)
                # The target is the policy node's; the relay's drops are reported, not judged.
                no_drops = pol["dropped_ticks"] == 0
                results[key]["target_met"] = bool(extra <= pol["inference_p50_ms"] + 1.0 and no_drops)
                # The one preprocessing function (decode + crop + resize) is policy work too.
                work = pol["inference_p50_ms"] + pol["preprocess_p50_ms"]
                results[key]["target_with_preprocess_ms"] = round(work + 1.0, 3)
                results[key]["target_with_preprocess_met"] = bool(extra <= work + 1.0 and no_drops)
        sockets = inet_sockets_of_this_process()
    finally:
        executor.shutdown(timeout_sec=2)
        probe.node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        spin.join(timeout=2)
    return {
        "benchmark": "ros-latency",
        "what": "image publish -> command received (same process clock), per frame",
        "config": {"hz": hz, "duration_s": duration, "warmup_s": warmup, "policy": policy,
                   "transport": "Fast DDS shared memory only", "executor": ("SingleThreadedExecutor" if os.environ.get("VMERPO_ROS_EXECUTOR", "events") == "single"
                                else "EventsExecutor") + " (nodes)"},
        "results": results,
        "ip_sockets_in_probe": [list(s) for s in sockets],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_avg": list(os.getloadavg())},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vmerpo bench ros-latency", description=__doc__.splitlines()[0])
    p.add_argument("--policy", help="exported policy (.onnx); default: a random-weight 84 px policy (needs torch)")
    p.add_argument("--hz", type=float, default=30.0)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per node and size (default 60)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--sizes", default="84x84,640x480", help="WxH list (default 84x84,640x480)")
    p.add_argument("--out", help="write the JSON here (refuses to overwrite without --overwrite)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.out and Path(args.out).exists() and not args.overwrite:
        print(f"{args.out} exists; pass --overwrite", file=sys.stderr)
        return 2
    try:
        sizes = [cast(tuple[int, int], tuple(int(v) for v in s.split("x")))
                 for s in args.sizes.split(",")]
    except ValueError:
        print(f"--sizes {args.sizes!r}: expected WxH,WxH", file=sys.stderr)
        return 2
    out = run_benchmark(args.policy, sizes, args.hz, args.duration, args.warmup,
                        progress=lambda m: print(m, file=sys.stderr, flush=True))
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if all(r.get("target_met") for r in out["results"].values()) else 1
