"""The run-directory pipeline on a tiny synthetic store: train (world model + MerPO), resume,
adapt to a held-out task, export, and ONNX/torch parity; bad input gives one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learning.store import EpisodeWriter, StoreSpec
from learning.synthetic import synthetic_episode

ROOT = Path(__file__).resolve().parents[2]


def family_spec(size=32) -> StoreSpec:
    return StoreSpec(
        robot="synthetic", control_hz=12.5, image_size=size,
        state_names=[f"q{i}" for i in range(8)], action_names=["dx", "dy", "dz", "grip"],
        action_low=[-1.0] * 4, action_high=[1.0] * 4, hold_action=[0.0] * 4,
        tasks=[{"id": i, "name": f"t{i}", "split": "train" if i < 3 else "test"} for i in range(5)],
    )


def make_family_store(path, tasks, episodes_per_task=3, length=24, seed=0):
    rng = np.random.default_rng(seed)
    with EpisodeWriter(path, family_spec(), mode="w") as w:
        for t in tasks:
            for _ in range(episodes_per_task):
                ep = synthetic_episode(rng, length, 32)
                ep["reward"] = (ep["action"][:, 0] * (1 if t % 2 else -1)).astype(np.float32)
                w.add_episode(ep, task_id=t, success=False)
    return path


def vmerpo(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "vmerpo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    d = tmp_path_factory.mktemp("family")
    return (make_family_store(d / "train.zarr", [0, 1, 2]),
            make_family_store(d / "heldout.zarr", [3], episodes_per_task=2, seed=1), d)


@pytest.fixture(scope="module")
def trained(family):
    train_store, _, d = family
    proc = vmerpo("train", "--data", str(train_store), "--config", "tiny", "--out", str(d / "run"),
                  "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d / "run"


def test_train_writes_a_complete_run(trained):
    info = json.loads((trained / "config.json").read_text())
    assert info["format"] == "vmerpo.run" and info["kind"] == "meta"
    assert info["meta_train_tasks"] == [0, 1, 2]
    assert (trained / "world_model" / "model.pt").exists()
    assert (trained / "latents.npz").exists() and (trained / "checkpoints" / "merpo.pt").exists()
    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 6 and np.isfinite(lines[-1]["q"])
    assert list((trained / "tb").iterdir())


def test_resume_of_a_finished_run_changes_nothing(trained, family, tmp_path):
    train_store, _, _ = family
    before = (trained / "checkpoints" / "merpo.pt").read_bytes()
    # where it runs may change on resume (run trained with device auto, resumed with cpu) ...
    proc = vmerpo("train", "--data", str(train_store), "--config", "tiny", "--out", str(trained),
                  "--resume", "--device", "cpu", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (trained / "checkpoints" / "merpo.pt").read_bytes() == before
    # ... what it computes may not
    (tmp_path / "c.json").write_text(json.dumps({"preset": "tiny", "merpo": {"meta_actor_lr": 0.123}}))
    proc = vmerpo("train", "--data", str(train_store), "--config", str(tmp_path / "c.json"),
                  "--out", str(trained), "--resume", "--no-progress")
    assert proc.returncode == 2 and "differs" in proc.stderr and "merpo" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_adapt_export_and_parity(trained, family, tmp_path):
    _, heldout, _ = family
    adapted = tmp_path / "adapted"
    proc = vmerpo("adapt", "--run", str(trained), "--data", str(heldout), "--out", str(adapted), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((adapted / "config.json").read_text())["task"] == 3
    onnx_path = tmp_path / "policy.onnx"
    proc = vmerpo("export", "--run", str(adapted), "--out", str(onnx_path), "--check", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["parity_ok"] and result["parity_max_abs_diff"] <= 1e-4
    assert result["spec"]["env"]["task"] == 3 and result["spec"]["image_size"] == 32
    assert not Path(str(onnx_path) + ".data").exists()
    proc = vmerpo("export", "--run", str(adapted), "--out", str(onnx_path))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


def test_bad_input_gives_one_line_errors(trained, family, tmp_path):
    train_store, heldout, d = family
    # a held-out task that also appears in meta-training
    proc = vmerpo("adapt", "--run", str(trained), "--data", str(train_store), "--task", "1",
                  "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "meta-training task" in proc.stderr
    # a run directory from a different config version
    bad = tmp_path / "oldrun"
    bad.mkdir()
    info = json.loads((trained / "config.json").read_text())
    info["version"] = 0
    (bad / "config.json").write_text(json.dumps(info))
    proc = vmerpo("adapt", "--run", str(bad), "--data", str(heldout), "--out", str(tmp_path / "y"))
    assert proc.returncode == 2 and "version" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # a store without a meta-train split (no task table)
    plain = tmp_path / "plain.zarr"
    spec = family_spec()
    spec.tasks = []
    with EpisodeWriter(plain, spec, mode="w") as w:
        w.add_episode(synthetic_episode(np.random.default_rng(0), 20, 32), task_id=0, success=False)
    proc = vmerpo("train", "--data", str(plain), "--config", "tiny", "--out", str(tmp_path / "z"))
    assert proc.returncode == 2 and "task" in proc.stderr
    # a shared world model trained on logs with other action limits
    other = tmp_path / "other_limits.zarr"
    spec = family_spec()
    spec.action_low, spec.action_high = [-2.0] * 4, [2.0] * 4
    with EpisodeWriter(other, spec, mode="w") as w:
        w.add_episode(synthetic_episode(np.random.default_rng(0), 20, 32), task_id=0, success=False)
    proc = vmerpo("train", "--data", str(other), "--config", "tiny", "--world-model", str(trained / "world_model"),
                  "--out", str(tmp_path / "v"))
    assert proc.returncode == 2 and "action limits" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # a config naming theta_j parameters that do not exist
    cfg = tmp_path / "bad_heads.json"
    cfg.write_text(json.dumps({"preset": "tiny", "adapt_model_heads": "prior"}))
    proc = vmerpo("train", "--data", str(train_store), "--config", str(cfg), "--out", str(tmp_path / "u"))
    assert proc.returncode == 2 and "adapt_model_heads 'prior'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # omega by hand: only for learners that have it, and only in [0, 1]
    for method, omega, why in (("bc", "0.5", "applies to merpo and rac"), ("merpo", "1.5", "must be in [0, 1]")):
        proc = vmerpo("adapt", "--run", str(trained), "--data", str(heldout), "--method", method,
                      "--omega", omega, "--out", str(tmp_path / f"w_{method}"))
        assert proc.returncode == 2 and why in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_merpo_adp_chooses_omega_for_the_new_task_and_records_it(trained, family, tmp_path):
    _, heldout, _ = family
    out = tmp_path / "adp"
    proc = vmerpo("adapt", "--run", str(trained), "--data", str(heldout), "--out", str(out),
                  "--method", "merpo_adp", "--steps", "3", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MerPO-Adp: omega" in proc.stderr
    info = json.loads((out / "config.json").read_text())
    choice = info["omega_choice"]
    assert info["method"] == "merpo_adp" and info["omega"] == json.loads(proc.stdout)["omega"] == choice["omega"]
    assert 0.0 <= choice["omega"] <= 1.0 and choice["omega_base"] == 0.4
    assert choice["rollouts"] == 2 * 8 and choice["horizon"] == 23  # 2 episodes of 24 rows, 8 draws each
    # the hand-set omega of plain MerPO is recorded the same way
    proc = vmerpo("adapt", "--run", str(trained), "--data", str(heldout), "--out", str(tmp_path / "w1"),
                  "--omega", "1", "--steps", "3", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "w1" / "config.json").read_text())["omega"] == 1.0
    from learning.merpo_train import adapt

    with pytest.raises(ValueError, match=r"unknown RAC setting\(s\) \['lamda'\]"):
        adapt(trained, str(heldout), tmp_path / "typo", rac_overrides={"lamda": 5}, log=lambda m: None,
              progress=False)


def test_ablation_start_from_the_pooled_pretraining_keeps_the_kl_to_pi_c(trained, family, tmp_path):
    """adapt(start="pooled"): MerPO's adaptation from single-task RAC's pooled pretraining
    (an ablation); with 0 RL steps the policy is that pretrained actor, not pi_c."""
    import torch

    from learning.merpo_train import adapt, pretrained_baseline

    _, heldout, _ = family
    quiet = dict(log=lambda m: None, progress=False)
    adapt(trained, str(heldout), tmp_path / "pooled", steps=0, start="pooled", **quiet)
    adapt(trained, str(heldout), tmp_path / "own", steps=0, **quiet)
    pooled_actor, _ = pretrained_baseline(trained, "rac", **quiet)

    def actor(d):
        return torch.load(tmp_path / d / "policy.pt", weights_only=True)["actor"]

    ref = pooled_actor.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in actor("pooled").items())
    assert not all(torch.equal(v, ref[k]) for k, v in actor("own").items())
    with pytest.raises(ValueError, match="start 'pi_c': expected one of own, pooled"):
        adapt(trained, str(heldout), tmp_path / "bad", start="pi_c", **quiet)
    with pytest.raises(ValueError, match=r"applies to merpo and merpo_adp \(or scratch to the baselines\), not bc"):
        adapt(trained, str(heldout), tmp_path / "bad", method="bc", start="pooled", **quiet)
    with pytest.raises(ValueError, match="start=scratch applies to the baselines, not merpo"):
        adapt(trained, str(heldout), tmp_path / "bad", method="merpo", start="scratch", **quiet)


@pytest.mark.parametrize("method", ["bc", "rac", "lompo"])
def test_baselines_adapt_from_their_pooled_pretraining(trained, family, tmp_path, method):
    """Each baseline is pretrained once on the run's pooled latents (cached in RUN/baselines)
    and adapted on the held-out log into a run that `vmerpo eval`/`export` load like MerPO's."""
    import torch

    from learning.merpo_train import TorchPolicy

    _, heldout, _ = family
    adapted = tmp_path / method
    proc = vmerpo("adapt", "--run", str(trained), "--data", str(heldout), "--out", str(adapted),
                  "--method", method, "--steps", "5", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["method"] == method
    assert json.loads((adapted / "config.json").read_text())["method"] == method
    cached = trained / "baselines" / f"{method}.pt"
    blob = torch.load(cached, weights_only=True)
    assert (blob["critic"] is None) == (method == "bc")
    # adaptation moved the actor away from its pretrained weights
    after = torch.load(adapted / "policy.pt", weights_only=True)["actor"]
    assert any(not torch.equal(after[k], v) for k, v in blob["actor"].items())
    policy = TorchPolicy(adapted)
    a = policy.act(np.zeros((32, 32, 3), np.uint8))
    assert a.shape == (4,) and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1.0)


def test_bc_fits_the_logged_actions():
    """BC raises the likelihood of the data actions and its mean action tracks them."""
    import torch

    from learning.baselines import train_bc
    from learning.rac import TanhGaussianActor

    torch.manual_seed(0)
    obs = torch.randn(512, 6)
    act = torch.tanh(obs[:, :2] @ torch.tensor([[1.0, -0.5], [0.3, 1.0]]))
    data = {"obs": obs, "act": act}
    actor = TanhGaussianActor(6, 2, 64, 2)
    before = -actor.log_prob(obs, act).mean().item()
    after = train_bc(actor, data, steps=400, batch=128, lr=3e-3)["behaviour_nll"]
    assert after < before - 1.0
    err = (actor.mean_unit(obs) - act).abs().mean().item()
    assert err < 0.1, err


def test_method_configs():
    from learning.baselines import method_config
    from learning.rac import RACConfig

    base = RACConfig()
    assert method_config("merpo", base).omega == 0.4 and method_config("merpo_adp", base) == base
    assert method_config("rac", base).omega == 1.0 and method_config("rac", base).cql_beta == base.cql_beta
    lompo = method_config("lompo", base)
    assert (lompo.cql_beta, lompo.lam, lompo.uncertainty_penalty, lompo.horizon) == (0.0, 0.0, 5.0, 5)
    with pytest.raises(ValueError, match="unknown method"):
        method_config("sac", base)


def test_pixel_presets_meta_train_merpo_v2_longer_and_the_demo_and_smoke_keep_their_budget():
    """cpu and paper: MerPO v2's meta-training of experiments/30 (12,000 RAC updates, 8,000
    warm-start and 12,000 embedding steps; MerPOv2Config's own defaults, used by the state track,
    stay); the demo and the pixel smoke budget keep 1,000 / 667 / 1,000."""
    import argparse

    from learning.merpo_train import V2_PIXEL_META_STEPS, preset
    from learning.merpo_v2 import MerPOv2Config

    for name in ("cpu", "paper"):
        v2 = preset(name).merpo_v2
        assert (v2.meta_steps, v2.warm_start_steps, v2.embedding.fit_steps) == (12000, 8000, 12000)
        assert v2.rac.behaviour_weight == "advantage"  # v2's own term, not the v1 preset's
    assert V2_PIXEL_META_STEPS > MerPOv2Config().meta_steps == 3000
    demo = preset("demo").merpo_v2
    assert (demo.meta_steps, demo.warm_start_steps, demo.embedding.fit_steps, demo.adapt_steps) == (1000, 667, 1000, 1000)
    # the pixel smoke budget scales the cpu preset's counts to its 1,000 updates as before
    from vmerpo.benchmarks.learning_pixel import pixel_budget

    smoke = pixel_budget(argparse.Namespace(track="pixel", budget="smoke", device="cpu", world_model=None,
                                            meta_critic=None, pooled_reward=None, wm_seeds=None, goal_pin=False,
                                            family="reach", learner_steps=None))
    from learning.merpo_train import v2_meta_budget

    v2 = v2_meta_budget(preset(smoke.config).merpo_v2, smoke.v2_meta_steps)
    assert (v2.meta_steps, v2.warm_start_steps, v2.embedding.fit_steps) == (1000, 667, 1000)


def test_pipeline_runs_on_a_world_model_with_the_bench_ensemble(family, tmp_path):
    """train + adapt (MerPO-Adp, LOMPO) on a world model whose prior heads read the action and
    carry random prior functions (the `bench` preset's ensemble, here at tiny size)."""
    train_store, heldout, _ = family
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preset": "tiny", "world_model": {"model": {
        "prior_action": True, "prior_random_scale": 3.0, "ensemble_bootstrap": 0.5}}}))
    proc = vmerpo("train", "--data", str(train_store), "--config", str(cfg), "--out", str(tmp_path / "run"),
                  "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    wm = json.loads((tmp_path / "run" / "world_model" / "config.json").read_text())
    assert wm["train"]["model"]["prior_random_scale"] == 3.0 and wm["train"]["model"]["prior_action"]
    for method in ("merpo_adp", "lompo"):
        out = tmp_path / method
        proc = vmerpo("adapt", "--run", str(tmp_path / "run"), "--data", str(heldout), "--out", str(out),
                      "--method", method, "--steps", "3", "--no-progress", "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out / "policy.pt").exists() and json.loads((out / "config.json").read_text())["method"] == method


def test_merpo_v2_trains_adapts_with_an_inferred_embedding_and_exports(family, tmp_path):
    """algorithm merpo_v2 end to end on the tiny store: train, adapt (merpo and meta_policy, both
    with the task embedding inferred from the held-out log), ONNX export with parity; --omega
    reaches the adaptation; merpo_adp (v1's omega rule) on it is refused in one line."""
    train_store, heldout, _ = family
    run = tmp_path / "run2"
    proc = vmerpo("train", "--data", str(train_store), "--config", "tiny", "--algorithm", "merpo_v2",
                  "--out", str(run), "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["algorithm"] == "merpo_v2" and np.isfinite(summary["fit"]["embedding_reward_mse"])
    assert (run / "checkpoints" / "merpo_v2.pt").exists()
    before = (run / "checkpoints" / "merpo_v2.pt").read_bytes()
    proc = vmerpo("train", "--data", str(train_store), "--config", "tiny", "--algorithm", "merpo_v2",
                  "--out", str(run), "--resume", "--no-progress")
    assert proc.returncode == 0 and (run / "checkpoints" / "merpo_v2.pt").read_bytes() == before
    for method in ("merpo", "meta_policy"):
        adapted = tmp_path / method
        proc = vmerpo("adapt", "--run", str(run), "--data", str(heldout), "--out", str(adapted), "--method", method,
                      "--no-progress", "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        res = json.loads(proc.stdout)
        inf = res["task_inference"]
        assert len(inf["z"]) == 2 and inf["fallback"] is None and "task inference: embedding" in proc.stderr
        assert res["adapt_steps"] == (10 if method == "merpo" else 0)
        assert json.loads((adapted / "config.json").read_text())["start"] == "meta-policy"  # (pi_c, Q_meta)
        onnx_path = tmp_path / f"{method}.onnx"
        proc = vmerpo("export", "--run", str(adapted), "--out", str(onnx_path), "--check", "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout)["parity_ok"]
    proc = vmerpo("adapt", "--run", str(run), "--data", str(heldout), "--out", str(tmp_path / "w0"),
                  "--omega", "0", "--no-progress", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["omega"] == 0.0
    assert json.loads((tmp_path / "w0" / "config.json").read_text())["omega"] == 0.0
    import torch

    a = torch.load(tmp_path / "merpo" / "policy.pt", weights_only=True)["actor"]
    b = torch.load(tmp_path / "w0" / "policy.pt", weights_only=True)["actor"]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the same start and seed: omega made the difference
    # omega 0.4 given is the learner the fixed rule's 0.4 makes (the pixel benchmark's sweep reuses it)
    proc = vmerpo("adapt", "--run", str(run), "--data", str(heldout), "--out", str(tmp_path / "w04"),
                  "--omega", "0.4", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    c = torch.load(tmp_path / "w04" / "policy.pt", weights_only=True)["actor"]
    assert json.loads((tmp_path / "merpo" / "config.json").read_text())["omega"] == 0.4
    assert all(torch.equal(a[k], c[k]) for k in a)
    proc = vmerpo("adapt", "--run", str(run), "--data", str(heldout), "--out", str(tmp_path / "x"),
                  "--method", "merpo_adp", "--no-progress")
    assert proc.returncode == 2 and "merpo_v2 run" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_merpo_v2_on_a_solved_log_with_the_solved_log_start_is_the_bc_baseline(family, tmp_path, monkeypatch):
    """`vmerpo adapt --start-rule solved-log` on a log whose every episode succeeded: the adapted
    policy acts as `--method bc --start scratch` on that log (same steps, --steps included, and
    seed), whatever the embedding; the run records the start; a log not solved starts from pi_c."""
    import torch

    from learning import merpo_train
    from learning.rac import TanhGaussianActor

    train_store, heldout, _ = family
    run = tmp_path / "run"
    proc = vmerpo("train", "--data", str(train_store), "--config", "tiny", "--algorithm", "merpo_v2",
                  "--out", str(run), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setattr(merpo_train, "log_success_of", lambda store, eps: 1.0)  # the held-out log, solved
    for steps in (None, 7):
        m = merpo_train.adapt(run, str(heldout), tmp_path / f"m{steps}", start_rule="solved-log", steps=steps,
                              progress=False, log=lambda msg: None)
        b = merpo_train.adapt(run, str(heldout), tmp_path / f"b{steps}", method="bc", start="scratch", steps=steps,
                              progress=False, log=lambda msg: None)
        assert m["start"] == "scratch" and m["omega"] == 1.0 and m["clone_steps"] == (steps or 10)  # tiny: 10
        cfg = json.loads((tmp_path / f"m{steps}" / "config.json").read_text())
        assert cfg["start"] == "scratch" and cfg["omega_rule"]["start_rule"] == "solved-log"
        pm, pb = (torch.load(tmp_path / f"{k}{steps}" / "policy.pt", weights_only=True) for k in ("m", "b"))
        am = TanhGaussianActor(pm["obs_dim"], pm["act_dim"], 32, 2)
        ab = TanhGaussianActor(pb["obs_dim"], pb["act_dim"], 32, 2)
        am.load_state_dict(pm["actor"])
        ab.load_state_dict(pb["actor"])
        obs = torch.randn(64, pb["obs_dim"])
        for z in (torch.tensor(pm["z"]), torch.zeros(len(pm["z"]))):
            torch.testing.assert_close(am.mean_unit(torch.cat([obs, z.expand(64, -1)], 1)), ab.mean_unit(obs))
        assert b["adapt_steps"] == (steps or 10)
    monkeypatch.setattr(merpo_train, "log_success_of", lambda store, eps: 0.6)
    m = merpo_train.adapt(run, str(heldout), tmp_path / "not_solved", start_rule="solved-log", progress=False,
                          log=lambda msg: None)
    assert m["start"] == "meta" and m["omega"] == 0.4 and m["clone_steps"] == 0
