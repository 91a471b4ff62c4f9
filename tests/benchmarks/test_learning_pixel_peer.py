"""The pixel track's d3rlpy peer on a tiny synthetic family: IQL trained on a merpo_v2 run's
latents, deployed behind the held-out log's world-model filter, exported to ONNX, and run by
onnxruntime acting as d3rlpy's own IQL does on the same features."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.learning.test_merpo_train import make_family_store

ROOT = Path(__file__).resolve().parents[2]


def test_the_pixel_peer_acts_as_d3rlpy_on_the_world_models_features(tmp_path, one_torch_thread):
    from vmerpo.benchmarks import peer

    why = peer.available()
    if why:
        pytest.skip(why)
    import torch

    from learning.latents import LatentCache
    from learning.merpo import Normalizer, transitions
    from learning.merpo_train import task_model_and_latents
    from learning.runtime.policy_runtime import PolicyRuntime
    from learning.store import EpisodeStore
    from vmerpo.benchmarks.learning_pixel import BUDGETS, _peer

    train = make_family_store(tmp_path / "train.zarr", [0, 1, 2])
    heldout = make_family_store(tmp_path / "heldout.zarr", [3], episodes_per_task=2, seed=1)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "vmerpo", "train", "--data", str(train), "--config", "tiny",
                           "--algorithm", "merpo_v2", "--out", str(run), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    budget = replace(BUDGETS["smoke"], peer_steps=40, peer_finetune_steps=30)
    jobs = _peer((str(tmp_path / "out"), str(run), "medium", 0, [(3, 0, str(heldout))],
                  ["iql_pooled", "iql_finetuned"], budget, 5))
    assert [(j[4], Path(j[5]).parent.name) for j in jobs] == [
        ("iql_pooled", "medium_s0_d0_t3_iql_pooled"), ("iql_finetuned", "medium_s0_d0_t3_iql_finetuned")]
    assert all(Path(j[5]).is_file() for j in jobs)

    # the same pooled learner again (seeded), acting on the filter's features of a logged frame
    norm = Normalizer.from_dict(json.loads((run / "normalizer.json").read_text()))
    pooled = {k: v.numpy() for k, v in transitions(LatentCache.load(run / "latents.npz"), norm).items()}
    algo = peer.make("iql", pooled["obs"].shape[1], pooled["act"].shape[1], peer.PeerConfig(), 5)
    peer.fit(algo, pooled, budget.peer_steps, 5)
    theta, _, _, _ = task_model_and_latents(run, str(heldout), 3)
    store = EpisodeStore.open(str(heldout))
    images, states = store.read("image", 0, 3), store.read("state", 0, 3)
    rts = {j[4]: PolicyRuntime(j[5], providers="cpu") for j in jobs}
    spec = rts["iql_pooled"].spec
    h, z = torch.zeros(1, spec.deter_size), torch.zeros(1, spec.stoch_size)
    prev = torch.zeros(1, spec.action_dim)
    for img, st in zip(images, states, strict=True):
        got = {m: rt.act(img, st if spec.uses_state else None) for m, rt in rts.items()}
        with torch.no_grad():
            h, z = theta.step(torch.from_numpy(img)[None], prev, h, z,
                              torch.from_numpy(np.asarray(st, np.float32))[None] if spec.uses_state else None)
        want = peer.act(algo, torch.cat([z, h], -1).numpy())[0]  # limits are [-1, 1]: no scaling
        np.testing.assert_allclose(got["iql_pooled"], want, atol=1e-4)
        assert np.abs(got["iql_finetuned"] - want).max() > 1e-4  # fine-tuning on the log moved it
        for rt in rts.values():
            rt.set_applied_action(got["iql_pooled"])
        prev = torch.from_numpy(got["iql_pooled"])[None]
    # a finished peer is kept: a rerun only lists it
    stamp = Path(jobs[1][5]).stat().st_mtime_ns
    again = _peer((str(tmp_path / "out"), str(run), "medium", 0, [(3, 0, str(heldout))],
                   ["iql_pooled", "iql_finetuned"], budget, 5))
    assert again == jobs and Path(jobs[1][5]).stat().st_mtime_ns == stamp
