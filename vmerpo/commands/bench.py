"""`vmerpo bench NAME [options]`: the product benchmarks (vmerpo/benchmarks/), each printing
numbers and writing JSON. `vmerpo bench NAME --help` shows a benchmark's own options."""

from __future__ import annotations

import argparse

from vmerpo.benchmarks import BENCHMARKS
from vmerpo.benchmarks import run as run_benchmark


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    w = max(map(len, BENCHMARKS))
    p.description = ("Benchmarks that print numbers and write JSON (speed goals are ratios measured in one "
                     "run). One-off studies live in experiments/.\n\nbenchmarks:\n"
                     + "\n".join(f"  {k:<{w}}  {b.help}" for k, b in BENCHMARKS.items()))
    p.epilog = "Example: vmerpo bench store --out results/bench_store.json; vmerpo bench learning --help"
    p.add_argument("name", choices=list(BENCHMARKS), metavar="NAME", help="which benchmark (listed above)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark (see NAME --help)")


def run(args: argparse.Namespace) -> int:
    return run_benchmark(args.name, args.options)
