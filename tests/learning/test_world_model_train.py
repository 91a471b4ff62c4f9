"""World-model training: the run directory, and exact resume after SIGKILL (tiny preset)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from learning.store import EpisodeWriter
from learning.synthetic import bench_spec, synthetic_episode
from learning.world_model_train import (
    load_config,
    load_world_model,
    parameters_equal,
    preset,
    train,
)

ROOT = Path(__file__).resolve().parents[2]


def make_store(path: Path, episodes: int = 6, length: int = 30, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    with EpisodeWriter(path, bench_spec(size), mode="w", log=lambda m: None) as w:
        for i in range(episodes):
            w.add_episode(synthetic_episode(rng, length, size), task_id=i % 2, success=False)
    return path


def kill_at_first_checkpoint(cmd: list[str], out: Path, env: dict[str, str]) -> int:
    """Start `cmd --out OUT`, SIGKILL it as soon as its first checkpoint exists; that checkpoint's step."""
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training ended before it could be killed"
    return torch.load(ckpt, weights_only=True, map_location="cpu")["step"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("wm") / "s.zarr")


def test_run_directory_holds_config_metrics_checkpoints_and_grids(store, tmp_path):
    cfg = dataclasses.replace(preset("tiny"), steps=20)
    summary = train(str(store), cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert summary["step"] == 20 and summary["n_slots"] == 3  # phi + two task heads
    assert (run / "config.json").exists() and (run / "model.pt").exists()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [5, 10, 15, 20]
    assert all(np.isfinite(x["reward_nll"]) and np.isfinite(x["image_nll"]) for x in lines)
    assert (run / "images" / "recon_000020.png").stat().st_size > 100
    assert (run / "images" / "openloop_000020.png").exists()
    model, meta = load_world_model(run)
    assert meta["step"] == 20 and meta["task_slots"] == {0: 1, 1: 2}
    assert model.cfg.input_size == 32 and model.cfg.action_dim == 4
    with pytest.raises(FileExistsError):
        train(str(store), cfg, run, progress=False)
    with pytest.raises(ValueError, match="differs"):
        train(str(store), dataclasses.replace(cfg, lr=1.0), run, resume=True, progress=False)


def test_config_file_overrides_a_preset(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"preset": "tiny", "steps": 7, "model": {"deter": 24}}))
    cfg = load_config(str(tmp_path / "c.json"))
    assert cfg.steps == 7 and cfg.model.deter == 24 and cfg.batch_size == preset("tiny").batch_size
    (tmp_path / "bad.json").write_text(json.dumps({"stpes": 7}))
    with pytest.raises(ValueError, match="stpes"):
        load_config(str(tmp_path / "bad.json"))


def test_killed_training_resumes_exactly(store, tmp_path):
    steps = 200
    cmd = [sys.executable, "-m", "vmerpo", "train-model", "--data", str(store), "--config", "tiny",
           "--steps", str(steps), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Reference: the same run, never interrupted (in-process).
    ref = train(str(store), dataclasses.replace(preset("tiny"), steps=steps), tmp_path / "ref", progress=False)
    killed = tmp_path / "killed"
    at_kill = kill_at_first_checkpoint(cmd, killed, env)
    assert 0 < at_kill < steps and not (killed / "model.pt").exists()
    out = subprocess.run([*cmd, "--out", str(killed), "--resume", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["step"] == ref["step"] == steps
    assert summary["steps_this_run"] == steps - at_kill
    a, _ = load_world_model(tmp_path / "ref")
    b, meta = load_world_model(killed)
    assert meta["config"] == dataclasses.replace(preset("tiny"), steps=steps).__class__.from_dict(
        json.loads((tmp_path / "ref" / "config.json").read_text())["train"])
    assert parameters_equal(a, b), "resumed run differs from the uninterrupted one"
    ref_lines = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    got_lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in got_lines] == [json.loads(x)["step"] for x in ref_lines]
    assert json.loads(got_lines[-1])["loss"] == json.loads(ref_lines[-1])["loss"]


def test_bootstrap_masks_are_fixed_per_episode_and_off_by_default():
    from learning.world_model_train import bootstrap_masks
    assert bootstrap_masks(10, 7, 0.0, 0) is None
    a, b = bootstrap_masks(400, 7, 0.5, 3), bootstrap_masks(400, 7, 0.5, 3)
    assert a.shape == (400, 7) and (a == b).all()  # a pure function of the seed: exact resume
    assert 0.4 < a.mean() < 0.6 and not (a == bootstrap_masks(400, 7, 0.5, 4)).all()
    assert preset("cpu").model.ensemble_bootstrap == 0.0 and preset("bench").model.ensemble_bootstrap == 0.5


def test_bootstrapped_training_runs_and_masks_reach_the_loss(store, tmp_path):
    from learning.world_model_train import open_data, to_torch
    cfg = dataclasses.replace(preset("tiny"), steps=4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ensemble_bootstrap=0.5))
    data = open_data(str(store), cfg)
    batch = to_torch(data.sampler.sample(), torch.device("cpu"), data.task_slots, data)
    assert batch["member_mask"].shape == (cfg.batch_size, cfg.model.ensemble)
    summary = train(str(store), cfg, tmp_path / "run", progress=False)
    assert summary["step"] == 4 and np.isfinite(summary["final"]["loss"])


def test_bench_preset_model_with_random_priors_trains_and_reloads(store, tmp_path):
    bench = preset("bench").model
    assert bench.prior_action and bench.prior_random_scale == 3.0 and preset("cpu").model.prior_random_scale == 0.0
    cfg = dataclasses.replace(preset("tiny"), steps=4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ensemble_bootstrap=0.5, prior_action=True,
                                                             prior_random_scale=3.0))
    summary = train(str(store), cfg, tmp_path / "run", progress=False)
    assert summary["step"] == 4 and np.isfinite(summary["final"]["loss"])
    model, _ = load_world_model(tmp_path / "run")
    assert model.cfg.prior_random_scale == 3.0
    h, slot, a = torch.randn(5, cfg.model.deter), torch.zeros(5, dtype=torch.long), torch.zeros(5, 4)
    mu = model.prior(h, slot, a)[0]
    model.prior_rand_w1.zero_()  # the reloaded model's random priors act on its prior means
    assert not torch.allclose(model.prior(h, slot, a)[0], mu)


def test_training_on_two_threads_is_the_same_run_to_run(store, tmp_path):
    """The demo trains its world model on 2 CPU threads: two runs on the same logs and seed end
    with the same parameters (the task heads' rows are gathered with `take_rows`, whose backward
    adds repeated slots in a fixed order; `p[slot]`'s did not, and the demo's runs drifted apart)."""
    tiny = preset("tiny")
    # heads big enough that their gathered rows (batch x 64 x 128 numbers) are split over threads
    cfg = dataclasses.replace(tiny, steps=30, threads=2, batch_size=8,
                              model=dataclasses.replace(tiny.model, deter=64, hidden=64, reward_hidden=128))
    for r in ("a", "b"):
        train(str(store), cfg, tmp_path / r, progress=False)
    a, _ = load_world_model(tmp_path / "a")
    b, _ = load_world_model(tmp_path / "b")
    assert parameters_equal(a, b), "two identical runs on 2 threads ended with different parameters"


def test_take_rows_is_indexing_with_a_fixed_order_backward():
    from perception.networks import take_rows

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        p = torch.randn(21, 64, 32, requires_grad=True)
        index = torch.randint(0, 21, (256,), generator=torch.Generator().manual_seed(0))  # many repeats
        up = torch.randn(256, 64, 32, generator=torch.Generator().manual_seed(1))
        grads = []
        for _ in range(10):
            p.grad = None
            (take_rows(p, index) * up).sum().backward()
            grads.append(p.grad.clone())
        assert torch.equal(take_rows(p, index), p[index])
        assert all(torch.equal(g, grads[0]) for g in grads)
        want = torch.zeros_like(p).index_put_((index,), up, accumulate=True)
        torch.testing.assert_close(grads[0], want)
    finally:
        torch.set_num_threads(threads)
