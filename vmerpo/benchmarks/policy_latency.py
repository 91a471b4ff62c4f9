"""Per-step latency of the deployed policy: PolicyRuntime (onnxruntime) vs torch eager.

Batch 1, one thread each, the same weights, measured in one run (these machines are noisy:
read the ratio). The policy is the deployed graph (world-model filter step + 3x256 actor) at
the `cpu` and `paper` world-model sizes. Targets (2-core CPU): onnxruntime at least 3x
faster than torch eager at p50, and p99 under 1.7 ms (5 % of a 30 Hz frame).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from learning.export import DeployedPolicy, export_policy
from learning.rac import mlp
from learning.runtime.policy_runtime import PolicyRuntime, choose_providers
from learning.runtime.spec import PolicySpec
from learning.world_model_train import preset
from perception.world_model import WorldModel


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


def build(preset_name: str, seed: int = 0) -> tuple[DeployedPolicy, PolicySpec]:
    torch.manual_seed(seed)
    cfg = preset(preset_name).model
    wm = WorldModel(cfg)
    policy = DeployedPolicy(wm, mlp(cfg.feat_dim, 256, 3, cfg.action_dim)).eval()
    spec = PolicySpec(image_size=cfg.input_size, action_names=[f"a{i}" for i in range(cfg.action_dim)],
                      action_low=[-1.0] * cfg.action_dim, action_high=[1.0] * cfg.action_dim,
                      deter_size=cfg.deter, stoch_size=cfg.stoch, run_id=f"latency-{preset_name}")
    return policy, spec


def measure(preset_name: str, steps: int, workdir: Path, providers: str = "cpu") -> dict:
    policy, spec = build(preset_name)
    path = export_policy(policy, spec, workdir / f"{preset_name}.onnx", overwrite=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, spec.image_size, spec.image_size, 3), dtype=np.uint8)

    rt = PolicyRuntime(path, providers=providers, intra_op_threads=1)
    rt.reset()
    for i in range(50):
        rt.act(images[i % 64])
    ort_t = []
    for i in range(steps):
        t0 = time.perf_counter()
        a = rt.act(images[i % 64])
        rt.set_applied_action(a)
        ort_t.append(time.perf_counter() - t0)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        h, z = torch.zeros(1, spec.deter_size), torch.zeros(1, spec.stoch_size)
        prev = torch.zeros(1, spec.action_dim)
        torch_t = []
        with torch.inference_mode():
            for i in range(50 + steps):
                t0 = time.perf_counter()
                a, h, z = policy(torch.from_numpy(images[i % 64][None]), prev, h, z)
                prev = a
                if i >= 50:
                    torch_t.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    out = {"preset": preset_name, "image_size": spec.image_size, "providers": rt.providers,
           "onnxruntime": _percentiles(ort_t), "torch_eager": _percentiles(torch_t),
           "model_bytes": path.stat().st_size}
    out["torch_over_ort_p50"] = out["torch_eager"]["p50_ms"] / out["onnxruntime"]["p50_ms"]
    return out


def run(steps: int = 1000, presets: tuple[str, ...] = ("cpu", "paper")) -> dict:
    results: dict = {"steps": steps, "threads": 1, "batch": 1, "policies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in presets:
            results["policies"][name] = measure(name, steps, Path(tmp))
            if "CUDAExecutionProvider" in choose_providers("auto"):
                results["policies"][name]["cuda"] = measure(name, steps, Path(tmp), "cuda")["onnxruntime"]
    cpu = results["policies"][presets[0]]
    results["targets"] = {
        "ort_at_least_3x_faster_p50": cpu["torch_over_ort_p50"] >= 3.0,
        "ort_p99_under_1.7ms": cpu["onnxruntime"]["p99_ms"] < 1.7,
    }
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vmerpo bench policy-latency", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000, help="measured steps per policy")
    ap.add_argument("--presets", default="cpu,paper", help="world-model sizes to export (first one is judged)")
    ap.add_argument("--out", default="results/bench_policy_latency.json")
    args = ap.parse_args(argv)
    res = run(args.steps, tuple(args.presets.split(",")))
    for name, r in res["policies"].items():
        o, t = r["onnxruntime"], r["torch_eager"]
        print(f"{name:6s} {r['image_size']}px  onnxruntime p50 {o['p50_ms']:.3f} ms p99 {o['p99_ms']:.3f} ms | "
              f"torch eager p50 {t['p50_ms']:.3f} ms p99 {t['p99_ms']:.3f} ms | ratio {r['torch_over_ort_p50']:.1f}x")
        if "cuda" in r:
            print(f"       cuda provider p50 {r['cuda']['p50_ms']:.3f} ms p99 {r['cuda']['p99_ms']:.3f} ms")
    print("targets:", res["targets"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(res["targets"].values()) else 1
