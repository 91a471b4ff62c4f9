"""Are two `vmerpo demo` output directories the same run? Compares the world model's parameters,
the cached latents, MerPO v2's checkpoint and every step's result in report.json (the output
directory's own path and wall-clock fields aside):
    python experiments/14-demo/compare_runs.py OUT_A OUT_B"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

WALL_CLOCK = {"wall_s", "seconds", "launch_file"}  # differ run to run by nature


def tensors(x: Any, pre: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield from tensors(v, f"{pre}{k}.")
    elif isinstance(x, torch.Tensor):
        yield pre, x


def same_tensors(pa: Path, pb: Path) -> bool:
    a = dict(tensors(torch.load(pa, map_location="cpu", weights_only=True)))
    b = dict(tensors(torch.load(pb, map_location="cpu", weights_only=True)))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def out_dir(steps: list[dict]) -> str:
    """The output directory as the run's commands name it (relative for `make demo`): the parent
    of the first step's --out."""
    cmd = shlex.split(steps[0]["command"])
    return str(Path(cmd[cmd.index("--out") + 1]).parent)


def strip(x: Any, root: str) -> Any:
    if isinstance(x, dict):
        return {k: strip(v, root) for k, v in x.items() if k not in WALL_CLOCK}
    if isinstance(x, list):
        return [strip(v, root) for v in x]
    return x.replace(root, "OUT") if isinstance(x, str) else x


def main() -> int:
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    print("world model parameters identical:", same_tensors(a / "run/world_model/model.pt", b / "run/world_model/model.pt"))
    la, lb = np.load(a / "run/latents.npz"), np.load(b / "run/latents.npz")
    print("cached latents identical:", all(np.array_equal(la[k], lb[k]) for k in la.files if k != "info"))
    print("MerPO v2 checkpoint identical:", same_tensors(a / "run/checkpoints/merpo_v2.pt", b / "run/checkpoints/merpo_v2.pt"))
    ra, rb = (json.loads((d / "report.json").read_text())["steps"] for d in (a, b))
    da, db = out_dir(ra), out_dir(rb)
    differ = [sa["step"] for sa, sb in zip(ra, rb, strict=True) if strip(sa["result"], da) != strip(sb["result"], db)]
    print(f"step results: {len(ra) - len(differ)} of {len(ra)} identical" + (f"; differ: {differ}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
