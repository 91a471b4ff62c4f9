"""Multi-process training (learning/distributed.py): the helpers are no-ops in one process, and
`torchrun --nproc_per_node=2 -m vmerpo train` computes what one process computes.

Why the two runs must agree: the world model's batch of each step is drawn as
processes x grad_accum shards, shard g by a sampler and a noise generator seeded by
(seed, step, g). Two ranks with grad_accum 1 and one process with grad_accum 2 therefore see
the same two half-batches with the same noise; DDP averages the two gradients, the single
process accumulates loss/2 of each: the same gradient up to summation order (observed: bit
identical). MerPO's tasks draw their samples from per-task generators, so the ranks run
exactly the inner steps one process runs; the pi_c gradient and Q_meta's critic mean are
summed over ranks in another order than in one process, a rounding difference (observed
4.8e-7 on Adam moments after 6 meta-steps). Tolerances: 1e-6 on world-model parameters,
1e-5 on MerPO parameters and optimizer state, 1e-5 relative on the logged metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from learning import distributed
from learning.store import EpisodeWriter, StoreSpec
from learning.synthetic import synthetic_episode

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


def test_helpers_are_no_ops_in_one_process():
    ctx, device = distributed.init("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert device == torch.device("cpu") and distributed.current() == ctx
    assert distributed.on_main(lambda: 41 + 1) == 42
    with pytest.raises(FileExistsError, match="exists"):
        distributed.on_main(lambda: (_ for _ in ()).throw(FileExistsError("run exists")))
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(distributed.all_reduce_(t, mean=True), torch.tensor([1.0, 2.0]))
    assert distributed.mean_over_ranks({"loss": 2.5}) == {"loss": 2.5}
    assert distributed.all_gather_objects({"a": [1]}) == [{"a": [1]}]
    assert distributed.gather_to_main({"x": torch.ones(2)})[0]["x"].device.type == "cpu"
    assert distributed.shard_seed(0, 5) == distributed.shard_seed(0, 5)
    assert distributed.shard_seed(0, 5, 0) != distributed.shard_seed(0, 5, 1) != distributed.shard_seed(0, 6, 1)
    assert [distributed.owner(i, 2) for i in range(5)] == [0, 1, 0, 1, 0]


def _store(path: Path) -> Path:
    spec = StoreSpec(robot="synthetic", control_hz=12.5, image_size=32,
                     state_names=[f"q{i}" for i in range(8)], action_names=["dx", "dy", "dz", "grip"],
                     action_low=[-1.0] * 4, action_high=[1.0] * 4, hold_action=[0.0] * 4,
                     tasks=[{"id": i, "name": f"t{i}", "split": "train"} for i in range(3)])
    rng = np.random.default_rng(0)
    with EpisodeWriter(path, spec, mode="w", log=lambda m: None) as w:
        for t in range(3):
            for _ in range(3):
                ep = synthetic_episode(rng, 24, 32)
                ep["reward"] = (ep["action"][:, 0] * (1 if t % 2 else -1)).astype(np.float32)
                w.add_episode(ep, task_id=t, success=False)
    return path


def _flat(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj.double()} if obj.is_floating_point() and obj.numel() else {}
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}/{k}"))
    return out


def _max_diff(a: Path, b: Path, keys: tuple[str, ...]) -> float:
    sa, sb = (torch.load(p, weights_only=True) for p in (a, b))
    fa, fb = _flat({k: sa[k] for k in keys}), _flat({k: sb[k] for k in keys})
    assert fa.keys() == fb.keys() and fa
    return max(float((fa[k] - fb[k]).abs().max()) for k in fa)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_two_processes_compute_what_one_process_computes(tmp_path):
    data = _store(tmp_path / "s.zarr")
    (tmp_path / "one.json").write_text(json.dumps({"preset": "tiny", "world_model": {"grad_accum": 2}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", "--data", str(data), "--no-progress", "--json"]
    one = subprocess.run([sys.executable, "-m", "vmerpo", *args, "--config", str(tmp_path / "one.json"),
                          "--out", str(tmp_path / "one")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "vmerpo", *args,
                          "--config", "tiny", "--out", str(tmp_path / "two")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads(two.stdout[two.stdout.index("{"):])["meta_steps"] == 6  # rank 0 alone reports
    a, b = tmp_path / "one", tmp_path / "two"
    assert _max_diff(a / "world_model" / "model.pt", b / "world_model" / "model.pt", ("model",)) <= 1e-6
    assert _max_diff(a / "checkpoints" / "merpo.pt", b / "checkpoints" / "merpo.pt",
                     ("meta_actor", "meta_critic", "learners")) <= 1e-5
    # every task learner trained, the one owned by rank 1 included (gathered into rank 0's file)
    learners = torch.load(b / "checkpoints" / "merpo.pt", weights_only=True)["learners"]
    assert all(int(v["steps"]) > 0 for v in learners.values()), {n: int(v["steps"]) for n, v in learners.items()}
    for name in ("world_model/metrics.jsonl", "metrics.jsonl"):
        la = [json.loads(x) for x in (a / name).read_text().splitlines()]
        lb = [json.loads(x) for x in (b / name).read_text().splitlines()]
        assert [x["step"] for x in la] == [x["step"] for x in lb]
        for x, y in zip(la, lb, strict=True):
            for k in ("loss", "image_nll", "kl", "q", "meta_kl", "bellman"):
                if k in x:
                    assert abs(x[k] - y[k]) <= 1e-5 * max(1.0, abs(x[k])), (name, x["step"], k, x[k], y[k])

    # Q_meta fitted to pi_c (meta_critic_steps): every rank makes the same critic steps, so the
    # result is still the one-process result (meta-training only, on the world model above)
    (tmp_path / "fit.json").write_text(json.dumps({"preset": "tiny", "merpo": {"meta_critic_steps": 2}}))
    fit = ["train", "--data", str(data), "--no-progress", "--config", str(tmp_path / "fit.json"),
           "--world-model", str(a / "world_model")]
    for cmd, out in (([sys.executable, "-m", "vmerpo"], "fit1"),
                     ([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "vmerpo"], "fit2")):
        r = subprocess.run([*cmd, *fit, "--out", str(tmp_path / out)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    assert _max_diff(tmp_path / "fit1" / "checkpoints" / "merpo.pt", tmp_path / "fit2" / "checkpoints" / "merpo.pt",
                     ("meta_actor", "meta_critic", "meta_rac", "learners")) <= 1e-5
    # only rank 0 wrote the run: one TensorBoard file per run, no stray rank-1 output
    assert len(list((b / "tb").glob("events.*"))) == 1
    assert len(list((b / "world_model" / "tb").glob("events.*"))) == 1
