"""The CUDA paths: world-model training with bf16 autocast and its resume after a kill, and the
whole run pipeline (MerPO meta-training, resume, adaptation, ONNX export) on a GPU. CI has no
GPU, so these are skipped there with the reason; run them on a GPU machine
(`pytest tests/learning/test_cuda.py`; scripts/gpu_check.sh times the paper sizes)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from learning.world_model_train import load_world_model, pick_device, preset, train
from tests.learning.test_merpo_train import ROOT, make_family_store, vmerpo
from tests.learning.test_world_model_train import kill_at_first_checkpoint, make_store

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch (CI has none)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_one_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


@cuda
def test_world_model_trains_under_bf16_autocast_and_resumes_after_a_kill(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    seen: set[torch.dtype] = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d) and torch.is_tensor(output):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        summary = train(str(store), dataclasses.replace(preset("tiny"), steps=10, device="cuda"),
                        tmp_path / "run", progress=False)
    finally:
        handle.remove()
    assert summary["device"] == "cuda" and summary["step"] == 10
    assert torch.bfloat16 in seen, f"convolutions ran in {seen}, not under bf16 autocast"
    model, _ = load_world_model(tmp_path / "run", "cuda")
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())  # fp32 master weights

    steps = 400
    cmd = [sys.executable, "-m", "vmerpo", "train-model", "--data", str(store), "--config", "tiny",
           "--steps", str(steps), "--device", "cuda", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    killed = tmp_path / "killed"
    at_kill = kill_at_first_checkpoint(cmd, killed, env)
    out = subprocess.run([*cmd, "--out", str(killed), "--resume", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["step"] == steps and resumed["steps_this_run"] == steps - at_kill
    assert np.isfinite(resumed["final"]["loss"])


@cuda
def test_the_run_pipeline_on_cuda(tmp_path):
    train_store = make_family_store(tmp_path / "train.zarr", [0, 1, 2])
    heldout = make_family_store(tmp_path / "heldout.zarr", [3], episodes_per_task=2, seed=1)
    run = tmp_path / "run"
    proc = vmerpo("train", "--data", str(train_store), "--config", "tiny", "--device", "cuda",
                  "--out", str(run), "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["config"]["device"] == "cuda"
    # resume loads every checkpoint (generators included) onto the GPU
    before = (run / "checkpoints" / "merpo.pt").read_bytes()
    proc = vmerpo("train", "--data", str(train_store), "--config", "tiny", "--device", "cuda",
                  "--out", str(run), "--resume", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "merpo.pt").read_bytes() == before
    for method in ("merpo", "rac"):
        proc = vmerpo("adapt", "--run", str(run), "--data", str(heldout), "--method", method,
                      "--out", str(tmp_path / method), "--no-progress", "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
    # a GPU-trained run adapts on the CPU too (a machine without a GPU)
    proc = vmerpo("adapt", "--run", str(run), "--data", str(heldout), "--device", "cpu",
                  "--out", str(tmp_path / "on_cpu"), "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = vmerpo("export", "--run", str(tmp_path / "merpo"), "--out", str(tmp_path / "p.onnx"), "--check", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["parity_ok"] and result["parity_max_abs_diff"] <= 1e-4


@cuda
def test_batched_learner_on_cuda_equals_single_task_updates():
    """BatchedRAC on the GPU: parameters, buffers and statistics stay on the device and the
    result equals K RAC.updates there (the CPU twin of this test: test_batched_rac.py)."""
    from learning.batched_rac import BatchedRAC, stack_batches
    from learning.rac import RAC, RACConfig

    cfg = RACConfig(hidden=32, layers=2, batch_real=16, batch_model=16, cql_n_actions=3)
    single = [RAC(12, 3, cfg, "cuda", seed=s) for s in (1, 2, 3)]
    twins = [RAC(12, 3, cfg, "cuda", seed=s) for s in (1, 2, 3)]
    for group in (single, twins):
        for r in group:
            r.model_buffer.add({k: v.cuda() for k, v in {
                "obs": torch.randn(64, 12), "act": torch.rand(64, 3) * 2 - 1, "rew": torch.randn(64),
                "next_obs": torch.randn(64, 12), "done": torch.zeros(64)}.items()})
    batched = BatchedRAC.from_racs(twins)
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        reals = [{k: v.cuda() for k, v in {
            "obs": torch.randn(16, 12, generator=g), "act": torch.rand(16, 3, generator=g) * 2 - 1,
            "rew": torch.randn(16, generator=g), "next_obs": torch.randn(16, 12, generator=g),
            "done": torch.zeros(16)}.items()} for _ in range(3)]
        for r, b in zip(single, reals, strict=True):
            r.update(b)
        stats = batched.update(stack_batches(reals))
    assert all(v.device.type == "cuda" for v in stats.values())
    batched.write_back(twins)
    for a, b in zip(single, twins, strict=True):
        for p, q in zip([*a.actor.parameters(), *a.critic.parameters()], [*b.actor.parameters(), *b.critic.parameters()],
                        strict=True):
            assert p.device.type == "cuda" and torch.allclose(p, q, atol=1e-4)
