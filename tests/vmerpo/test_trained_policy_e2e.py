"""A policy trained on MuJoCo logs, end to end: the exported ONNX file and the run's
torch policy act alike in closed loop (max |diff| <= 1e-4 over 100 steps), `vmerpo eval` gives
the same results for both on the same seeds, and a mismatched spec is refused. The trained
run is the session fixture `exported` (tests/vmerpo/conftest.py), shared with test_ros_eval.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.vmerpo.conftest import ENV, ROOT


def vmerpo(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "vmerpo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_onnx_and_torch_policies_act_alike_in_closed_loop(exported):
    from learning.merpo_train import TorchPolicy
    from learning.runtime.policy_runtime import PolicyRuntime
    from sim.envs import make_env

    rt = PolicyRuntime(exported / "policy.onnx", providers="cpu")
    tp = TorchPolicy(exported / "adapted")
    env = make_env(ENV, 64, 100, 1)
    try:
        limiter = env.safety_limiter()
        env.set_task(41)
        obs = env.reset()
        rt.reset(), tp.reset(), limiter.reset()
        worst = 0.0
        for _ in range(100):
            state = obs["state"] if rt.spec.uses_state else None
            a_rt, a_tp = rt.act(obs["image"], state), tp.act(obs["image"], state)
            worst = max(worst, float(np.abs(a_rt - a_tp).max()))
            applied = limiter.limit(a_rt, env.ee_position() if limiter.needs_ee_position else None)
            rt.set_applied_action(applied)
            tp.set_applied_action(applied)
            obs, *_ = env.step(applied)
    finally:
        env.close()
    assert worst <= 1e-4, worst


def test_eval_of_onnx_equals_eval_of_run_directory(exported):
    common = ["--env", ENV, "--tasks", "41,42", "--episodes", "2", "--seed", "0",
              "--max-episode-steps", "60", "--json", "--no-progress"]
    runs = {}
    for name, policy in (("onnx", exported / "policy.onnx"), ("torch", exported / "adapted")):
        proc = vmerpo("eval", "--policy", str(policy), *common)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = json.loads(proc.stdout)
    a, b = runs["onnx"], runs["torch"]
    assert a["success_rate"] == b["success_rate"]
    assert a["mean_return"] == pytest.approx(b["mean_return"], rel=1e-3)
    for task in a["per_task"]:
        assert a["per_task"][task]["success_rate"] == b["per_task"][task]["success_rate"]


def test_mismatched_policy_spec_is_refused_before_acting(exported):
    proc = vmerpo("eval", "--policy", str(exported / "policy.onnx"), "--env", ENV, "--tasks", "41,42",
                  "--episodes", "1", "--image-size", "84", "--no-progress")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "image_size: policy has 64, configuration has 84" in lines[0], proc.stderr
    # logs drawn without the goal pin: a pinned environment (direct or over ROS 2) is refused
    for cmd in ("eval", "ros-eval"):
        proc = vmerpo(cmd, "--policy", str(exported / "policy.onnx"), "--env", ENV, "--tasks", "41,",
                      "--episodes", "1", "--goal-pin", "--no-progress")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "trained on images without the goal pin" in lines[0] and "without --goal-pin" in lines[0]


def test_training_evaluates_the_meta_policy_in_mujoco(exported):
    """`vmerpo train --eval-every 3`: pi_c's closed-loop success and return at meta-steps 3
    and 6 (the tiny preset's last) land in metrics.jsonl and TensorBoard."""
    import json

    rows = [json.loads(x) for x in (exported / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if "eval_success" in r}
    assert sorted(evals) == [3, 6]
    for r in evals.values():
        assert 0.0 <= r["eval_success"] <= 1.0
        assert r["eval_return"] == r["eval_return"] and r["eval_return"] > -1e6  # finite
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(exported / "run" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/success")] == [3, 6]


def test_adapt_starts_a_baseline_from_scratch_and_refuses_what_does_not_apply(exported, tmp_path):
    """`vmerpo adapt --start scratch`: BC on the new task's log alone (the demo's and the
    learning benchmark's baseline), recorded in the adapted run; MerPO always starts from pi_c."""
    common = ["--run", str(exported / "run"), "--data", str(exported / "heldout.zarr"), "--no-progress"]
    bad = vmerpo("adapt", *common, "--method", "merpo", "--start", "scratch", "--out", str(tmp_path / "m"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "start=scratch applies to the baselines, not merpo" in bad.stderr  # learning.merpo_train.adapt's check
    assert not (tmp_path / "m").exists()
    rule = vmerpo("adapt", *common, "--omega-rule", "solved-log", "--out", str(tmp_path / "m"))  # a v1 run
    assert rule.returncode == 2 and len(rule.stderr.strip().splitlines()) == 1, rule.stderr
    assert "--omega-rule applies to merpo on a merpo_v2 run, not merpo on a merpo run" in rule.stderr
    start = vmerpo("adapt", *common, "--start-rule", "solved-log", "--out", str(tmp_path / "m"))
    assert start.returncode == 2 and len(start.stderr.strip().splitlines()) == 1, start.stderr
    assert "--start-rule applies to merpo on a merpo_v2 run, not merpo on a merpo run" in start.stderr
    ok = vmerpo("adapt", *common, "--method", "bc", "--start", "scratch", "--steps", "5", "--out", str(tmp_path / "bc"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    cfg = json.loads((tmp_path / "bc" / "config.json").read_text())
    assert cfg["start"] == "scratch" and cfg["method"] == "bc" and (tmp_path / "bc" / "policy.pt").exists()
    from learning.merpo_train import start_label

    # the CLI's --start pretrained is recorded in its own word, not the internal "own"
    assert start_label("bc", "own") == "pretrained" and start_label("rac", "scratch") == "scratch"
    assert start_label("merpo", "own") == "meta-policy" and start_label("merpo", "pooled") == "pooled"
