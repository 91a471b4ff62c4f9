"""`vmerpo bench NAME [options]`: benchmarks that print numbers and write JSON.

Each benchmark lives with the layer it measures and exposes `main(argv) -> int`; the
scripts under bench/ call the same functions. Run `vmerpo bench NAME --help` for options.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "store": ("learning.benchmarks.store", "episode store write + sampler frames/s vs a memmap"),
    "policy-latency": ("learning.benchmarks.policy_latency", "onnxruntime vs torch eager per-step latency"),
    "world-model": ("learning.benchmarks.world_model", "world-model uncertainty, meta-model and speed"),
    "learning": ("vmerpo.bench_learning", "MerPO vs baselines on held-out tasks"),
    "sim": ("sim.benchmarks", "MuJoCo collection frames/s with 1 and 2 workers"),
    "ros-latency": ("robot_nodes.benchmarks", "policy_node latency vs a bare relay over ROS 2"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Benchmarks: " + "; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items())
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark (see NAME --help)")


def run(args: argparse.Namespace) -> int:
    module_name, _ = BENCHMARKS[args.name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise ValueError(f"benchmark {args.name!r} is not yet available in this version") from None
        raise
    if not hasattr(module, "main"):
        raise ValueError(f"benchmark {args.name!r} is not yet available in this version")
    return int(module.main(args.options) or 0)
