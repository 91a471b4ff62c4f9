"""`vmerpo collect`: reproducible stores, one writer, interrupt-safe, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from learning.store import EpisodeStore
from sim.collect import CollectConfig, collect

ROOT = Path(__file__).resolve().parents[2]


def _cfg(out, workers, **kw):
    base = dict(family="push-v3", out=str(out), tasks=[0, 41], episodes_per_task=2,
                quality="mixed", max_episode_steps=30, seed=3, workers=workers)
    base.update(kw)
    return CollectConfig(**base)


def _assert_same_store(a_path, b_path):
    a, b = EpisodeStore.open(a_path), EpisodeStore.open(b_path)
    assert a.n_episodes == b.n_episodes
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    np.testing.assert_array_equal(a.episode_task, b.episode_task)
    for i in range(a.n_episodes):
        ea, eb = a.episode(i), b.episode(i)
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"episode {i} {key}")
    for name in ("behavior", "quality", "seed", "episode_index"):
        assert list(a.provenance(name)) == list(b.provenance(name))


def test_same_seed_same_frames_for_1_and_2_workers(tmp_path):
    s1 = collect(_cfg(tmp_path / "w1.zarr", 1), progress=False)
    s2 = collect(_cfg(tmp_path / "w2.zarr", 2), progress=False)
    assert s1["episodes_written"] == s2["episodes_written"] == 4
    _assert_same_store(tmp_path / "w1.zarr", tmp_path / "w2.zarr")

    store = EpisodeStore.open(tmp_path / "w1.zarr")
    spec = store.spec
    assert {t["split"] for t in spec.tasks} == {"train", "test"} and len(spec.tasks) == 50
    assert spec.env["max_episode_steps"] == 30 and spec.env["action_repeat"] == 1
    assert spec.env["collection"]["quality"] == "mixed"
    assert set(store.provenance("quality")) <= {"expert", "medium", "random"}
    assert all(b for b in store.provenance("behavior"))
    assert list(store.episode_task) == [0, 0, 41, 41]
    assert np.all(store.episode_lengths == 30)
    ep = store.episode(0)
    np.testing.assert_allclose(ep["timestamp"], np.arange(30) * 0.0125)
    assert not ep["terminal"].any()
    # a different seed gives different data
    collect(_cfg(tmp_path / "s4.zarr", 0, seed=4), progress=False)
    other = EpisodeStore.open(tmp_path / "s4.zarr")
    assert not all(np.array_equal(other.episode(i)["action"], store.episode(i)["action"])
                   for i in range(4))


def test_resume_adds_only_missing_episodes(tmp_path):
    out = tmp_path / "r.zarr"
    collect(_cfg(out, 0, episodes_per_task=1), progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        collect(_cfg(out, 0), progress=False)
    with pytest.raises(ValueError, match="seed=3"):
        collect(_cfg(out, 0, seed=9, resume=True), progress=False)
    s = collect(_cfg(out, 0, resume=True), progress=False)
    assert s["episodes_skipped"] == 2 and s["episodes_written"] == 2
    store = EpisodeStore.open(out)
    got = sorted(zip(store.episode_task.tolist(), store.provenance("episode_index").tolist(),
                     strict=True))
    assert got == [(0, 0), (0, 1), (41, 0), (41, 1)]
    collect(_cfg(tmp_path / "fresh.zarr", 0), progress=False)
    fresh = EpisodeStore.open(tmp_path / "fresh.zarr")
    by_key = {(t, k): i for i, (t, k) in enumerate(zip(
        fresh.episode_task.tolist(), fresh.provenance("episode_index").tolist(), strict=True))}
    for i, key in enumerate(zip(store.episode_task.tolist(),
                                store.provenance("episode_index").tolist(), strict=True)):
        np.testing.assert_array_equal(store.episode(i)["image"], fresh.episode(by_key[key])["image"])


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and a Python started that way keeps
    # ignoring it (no KeyboardInterrupt): give the child the default, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "vmerpo", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint, **kw)


def _wait_for_episodes(out, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        try:
            if EpisodeStore.open(out, load="lazy").n_episodes >= n:
                return
        except Exception:  # not created yet / mid-write
            pass
        time.sleep(0.3)
    raise AssertionError("collection did not progress")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupt_keeps_committed_episodes_and_resume_finishes(tmp_path, sig):
    out = tmp_path / "k.zarr"
    # 24 episodes of 100 steps: ~2,200 steps (>= 7 s) of work left after the first 2 are
    # committed, so the signal lands mid-collection even when a loaded machine is slow to
    # notice them (12 x 80 once finished before a SIGINT arrived on a loaded CI machine)
    args = ["collect", "--env", "reach-v3", "--tasks", "0,1,2", "--episodes-per-task", "8",
            "--quality", "medium", "--max-episode-steps", "100", "--workers", "2", "--seed", "1",
            "--out", str(out), "--no-progress"]
    proc = _cli(*args, start_new_session=True)
    _wait_for_episodes(out, 2, proc)
    if sig == signal.SIGINT:  # Ctrl-C reaches the whole process group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else -9), err
    kept = EpisodeStore.open(out).n_episodes  # opens: nothing committed was lost
    assert 2 <= kept < 24
    time.sleep(1.0)  # orphaned workers notice their writer is gone and stop
    done = _cli(*args, "--resume", "--json")
    stdout, err = done.communicate(timeout=180)
    assert done.returncode == 0, err
    summary = json.loads(stdout)
    assert summary["episodes_skipped"] == kept and summary["episodes_written"] == 24 - kept
    store = EpisodeStore.open(out)
    assert sorted(zip(store.episode_task.tolist(), store.provenance("episode_index").tolist(),
                      strict=True)) == [(t, k) for t in range(3) for k in range(8)]


@pytest.mark.parametrize("args,message", [
    (["--env", "rech-v3"], "unknown env 'rech-v3'; choose one of reach-v3"),
    (["--env", "reach-v3", "--tasks", "0,77"], "task id 77 out of range for reach-v3"),
    (["--env", "reach-v3", "--image-size", "100"], "image size 100 not supported"),
    (["--env", "reach-v3", "--quality", "great"], "unknown quality 'great'"),
])
def test_collect_bad_input_is_one_line(tmp_path, args, message):
    proc = _cli("collect", *args, "--out", str(tmp_path / "x.zarr"), "--no-progress")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in err.strip().splitlines() if "Warn" not in ln]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "x.zarr").exists()


def test_eval_cli_json_and_errors(tmp_path):
    proc = _cli("eval", "--policy", "expert", "--env", "reach-v3", "--tasks", "40,41",
                "--episodes", "1", "--max-episode-steps", "60", "--json", "--no-progress")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    res = json.loads(out)
    assert res["success_rate"] == 1.0 and set(res["per_task"]) == {"40", "41"}
    assert res["mean_return"] > 0
    for args, message in [
        (["--policy", "random", "--env", "reach-v3", "--tasks", "50"], "--tasks 50"),
        (["--policy", str(tmp_path), "--env", "reach-v3"], "not a vmerpo run directory"),
        (["--policy", "nope", "--env", "reach-v3"], "expected expert, medium, random"),
    ]:
        p = _cli("eval", *args, "--no-progress")
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and message in err, err


def test_hand_init_noise_is_recorded_reproducible_and_checked_on_resume(tmp_path):
    """Random hand starts: recorded in the store, identical for 1 and 2 workers, different
    starts across episodes of one task, and a resume with another noise is refused."""
    a, b = tmp_path / "n1.zarr", tmp_path / "n2.zarr"
    collect(_cfg(a, 1, quality="expert", hand_init_noise=0.04), progress=False)
    collect(_cfg(b, 2, quality="expert", hand_init_noise=0.04), progress=False)
    _assert_same_store(a, b)
    store = EpisodeStore.open(a)
    assert store.spec.env["hand_init_noise_m"] == 0.04
    assert store.spec.env["collection"]["hand_init_noise"] == 0.04
    first = [store.episode(i)["state"][0, :3] for i in range(store.n_episodes)]
    assert np.linalg.norm(first[0] - first[1]) > 5e-3, "two episodes of task 0 start apart"
    with pytest.raises(ValueError, match=r"collected with hand_init_noise=0.04, this run asks for 0.0"):
        collect(_cfg(a, 0, quality="expert", resume=True), progress=False)
    # a store written before the option existed (no hand_init_noise in its attrs) counts as
    # fixed start: it resumes with 0 and refuses random starts
    import zarr

    old = tmp_path / "z.zarr"
    collect(_cfg(old, 0, quality="expert", episodes_per_task=1), progress=False)
    group = zarr.open_group(str(old), mode="r+")
    spec = group.attrs["spec"]
    del spec["env"]["hand_init_noise_m"], spec["env"]["collection"]["hand_init_noise"]
    group.attrs["spec"] = spec
    with pytest.raises(ValueError, match=r"hand_init_noise=0.0, this run asks for 0.04"):
        collect(_cfg(old, 0, quality="expert", hand_init_noise=0.04, resume=True), progress=False)
    s = collect(_cfg(old, 0, quality="expert", resume=True), progress=False)
    assert s["episodes_skipped"] == 2 and s["episodes_written"] == 2


def test_goal_pin_is_recorded_and_checked_on_resume(tmp_path):
    """Logs drawn with the goal pin say so in the store (render and collection), and a resume
    that asks for the other rendering is refused by name."""
    from sim.envs import goal_pin_of

    a = tmp_path / "pin.zarr"
    collect(_cfg(a, 0, quality="expert", goal_pin=True, tasks=[41], episodes_per_task=1), progress=False)
    store = EpisodeStore.open(a)
    assert goal_pin_of(store.spec.env) and store.spec.env["collection"]["goal_pin"] is True
    with pytest.raises(ValueError, match=r"collected with goal_pin=True, this run asks for False"):
        collect(_cfg(a, 0, quality="expert", tasks=[41], episodes_per_task=2, resume=True), progress=False)
    with pytest.raises(ValueError, match=r"goal pin: drawer-close-v3 draws no goal marker"):
        collect(_cfg(tmp_path / "d.zarr", 0, family="drawer-close-v3", goal_pin=True), progress=False)


def test_aim_steers_the_scripted_expert_at_the_tool_centre_in_eval_and_collect(tmp_path):
    """--aim tool-centre: Meta-World's reach expert brought to the tool centre, where success is
    measured (it ends 4.6 cm from the goal when it steers the hand, 1.7 cm at step 60 aimed)."""
    closest = {}
    for aim in ("hand", "tool-centre"):
        proc = _cli("eval", "--policy", "expert", "--aim", aim, "--env", "reach-v3", "--tasks", "40",
                    "--episodes", "1", "--max-episode-steps", "60", "--json", "--no-progress")
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        closest[aim] = json.loads(out)["episode_results"][0]["min_distance"]
    assert closest["tool-centre"] < closest["hand"] - 0.02, closest
    proc = _cli("collect", "--env", "reach-v3", "--tasks", "40", "--episodes-per-task", "1", "--quality", "medium",
                "--aim", "tool-centre", "--max-episode-steps", "20", "--workers", "0",
                "--out", str(tmp_path / "a.zarr"), "--no-progress")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    env = EpisodeStore.open(str(tmp_path / "a.zarr")).spec.env
    assert env["collection"]["aim"] is True, env["collection"]
    assert env["behavior_policies"]["tool_centre_aimed"] is True, env["behavior_policies"]
