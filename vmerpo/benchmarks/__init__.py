"""Product benchmarks: scripts that print numbers and write JSON, run as `vmerpo bench NAME`.

Every benchmark lives in this package as `vmerpo/benchmarks/<name>.py` with `main(argv) -> int`.
Speed goals are judged as ratios measured in one run (ORT vs torch, policy_node vs a bare
relay): these machines are noisy. One-off studies are not here: they live in experiments/.
Importing this package imports no benchmark (they pull in torch, MuJoCo or rclpy).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    module: str  # under vmerpo.benchmarks
    help: str
    args: tuple[str, ...] = ()  # arguments put before the user's


BENCHMARKS: dict[str, Benchmark] = {
    "store": Benchmark("store", "episode store: write frames/s and sampler frames/s (memory, lazy) vs a memmap"),
    "sampler": Benchmark("store", "sampler reads alone: in-memory and lazy chunk-cached vs a memmap",
                         ("--part", "sampler")),
    "sim": Benchmark("sim", "MuJoCo collection frames/s with 1 and 2 workers"),
    "policy-latency": Benchmark("policy_latency", "policy step: onnxruntime vs torch eager, batch 1"),
    "ros-latency": Benchmark("ros_latency", "ROS 2 image -> command: policy_node vs a bare relay"),
    "rac-speed": Benchmark("rac_speed", "RAC update cost; K task learners one by one vs batched (MerPO's inner loop)"),
    "world-model": Benchmark("world_model", "world model: latent uncertainty vs error, OOD actions, meta-model"),
    "learning": Benchmark("learning", "MerPO vs baselines adapted to held-out tasks, in MuJoCo"),
    "faults": Benchmark("faults", "fault injection: kill, corrupt and attack everything that holds state"),
}


def run(name: str, argv: list[str]) -> int:
    """Run benchmark `name` with the command-line arguments `argv`; returns its exit code."""
    import importlib

    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    b = BENCHMARKS[name]
    module = importlib.import_module(f"vmerpo.benchmarks.{b.module}")
    return int(module.main([*b.args, *argv]) or 0)
