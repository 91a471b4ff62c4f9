"""Multi-process training under `torchrun` (docs/scaling.md): one process per GPU
(or per CPU worker), gloo on CPU, nccl on CUDA. No home-made cluster code: torchrun starts the
processes and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; this module
joins its process group and offers the few collectives the trainers need.

Outside torchrun every helper is a no-op on "rank 0 of 1", so the single-process code path is
the same code.

    torchrun --standalone --nproc_per_node=2 -m vmerpo train-model --data logs.zarr ...

What runs where:
- world model: data parallel (DistributedDataParallel). The batch of step i is drawn as
  `world_size x grad_accum` shards, shard g with a sampler seeded by (seed, i, g) and its own
  noise generator; DDP averages the gradients. Any (processes, grad_accum) pair with the same
  product computes the same steps up to float rounding. Only rank 0 writes the run directory.
- MerPO: every rank holds pi_c and Q_meta; task learner n lives on rank `owner(n)` and the
  tasks of a meta-batch are run by their owners; the meta-policy gradient and Q_meta's mean of
  task critics are summed over ranks (`learning/merpo.py`).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def current() -> Context:
    """This process's place in the group (rank 0 of 1 when none was joined)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                   str(dist.get_backend()))


def init(device: str | torch.device = "cpu") -> tuple[Context, torch.device]:
    """Join the process group torchrun describes (idempotent) and return it with this rank's
    device: `cuda:LOCAL_RANK` for CUDA, else `device` unchanged. Not under torchrun (or with
    WORLD_SIZE 1): nothing is initialised."""
    device = torch.device(device)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return Context(), device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "gloo" and os.environ.get("MASTER_ADDR", "") in ("127.0.0.1", "localhost", "::1"):
            # one machine: keep gloo's sockets on loopback (no traffic leaves the host)
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        atexit.register(_shutdown)
    return current(), device


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only (file-system work such as preparing a run directory) and give
    every rank its result; an exception on rank 0 is raised on every rank."""
    ctx = current()
    if not ctx.enabled:
        return fn()
    box: list[Any] = [None]
    if ctx.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def all_reduce_(tensor: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """Sum (or mean) over ranks, in place."""
    ctx = current()
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        if mean:
            tensor /= ctx.world_size
    return tensor


def all_reduce_grads_(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum the gradients over ranks (a rank whose loss did not touch a parameter adds zero)."""
    if not current().enabled:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each scalar over ranks (every rank passes the same keys)."""
    if not current().enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    all_reduce_(t, mean=True)
    return dict(zip(keys, t.cpu().tolist(), strict=True))


def all_gather_objects(obj: T) -> list[T]:
    ctx = current()
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: T) -> list[T] | None:
    """Every rank's `obj` on rank 0 (tensors moved to the CPU first); None on other ranks."""
    ctx = current()
    obj = to_cpu(obj)
    if not ctx.enabled:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def shard_seed(seed: int, step: int, shard: int | None = None) -> int:
    """Seed of the noise of (step, shard); shard None is the single-shard stream."""
    key = [seed, step] if shard is None else [seed, step, shard]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def owner(index: int, world_size: int) -> int:
    """The rank that owns item `index` (MerPO: the task learner at that position)."""
    return index % world_size
