"""The learning benchmark v2: its aggregation, its outputs and the refusals of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vmerpo.benchmarks.learning import (
    _subset,
    check_out,
    plot,
    results_markdown,
    summarize,
    unit_values,
)

ROOT = Path(__file__).resolve().parents[2]


def rows():
    """merpo = bc + 0.2 on every unit (tasks 40, 41; draws 0, 1); a zero-shot method with one
    value per task; a second world-model seed of one unit."""
    out = []
    for task, base in ((40, 0.3), (41, 0.6)):
        for d, off in ((0, 0.0), (1, 0.1)):
            out.append({"quality": "medium", "method": "bc", "task": task, "draw": d, "success_rate": base + off,
                        "mean_return": 100.0, "final_distance": 0.1, "min_distance": 0.05, "episodes": 20})
            out.append({"quality": "medium", "method": "merpo", "task": task, "draw": d,
                        "success_rate": base + off + 0.2, "mean_return": 200.0, "final_distance": 0.05,
                        "min_distance": 0.02, "episodes": 20})
            out.append({"quality": "medium", "method": "meta_policy", "task": task, "draw": d,
                        "success_rate": 0.5, "episodes": 20, "zero_shot": True})
    out.append({"quality": "medium", "method": "merpo", "task": 40, "draw": 0, "success_rate": 0.7,
                "episodes": 20, "wm_seed": 1})
    return out


def test_units_average_world_model_seeds_and_the_summary_has_the_issue_fields():
    v = unit_values(rows(), "merpo", "medium")
    assert v[(40, 0)] == pytest.approx((0.5 + 0.7) / 2)  # two world-model seeds of one unit: their mean
    behaviour = {("medium", 40, 0): 0.4, ("medium", 40, 1): 0.4, ("medium", 41, 0): 0.6, ("medium", 41, 1): 0.6}
    res = summarize(rows(), behaviour, ["bc", "merpo", "meta_policy"], ["medium"])["medium"]
    bc = res["bc"]
    assert bc["success_mean"] == pytest.approx(np.mean([0.3, 0.4, 0.6, 0.7]))
    assert bc["n_units"] == 4 and bc["n_tasks"] == 2 and bc["n_episodes"] == 80
    lo, hi = bc["success_ci"]
    assert lo <= bc["success_mean"] <= hi
    assert bc["return_mean"] == 100.0 and bc["final_distance_mean"] == pytest.approx(0.1)
    vs = res["meta_policy"]["paired"]["vs_bc"]
    assert vs["n_units"] == 4 and vs["mean"] == pytest.approx(0.5 - bc["success_mean"])
    assert res["merpo"]["paired"]["vs_bc"]["mean"] > 0.2  # 0.2 everywhere, 0.3 on the averaged unit
    assert res["behaviour"]["success_mean"] == pytest.approx(0.5)
    assert "vs_behaviour" in res["merpo"]["paired"] and "vs_merpo" in res["bc"]["paired"]


def test_a_resume_with_other_qualities_or_methods_keeps_the_earlier_units():
    """A second invocation on the same --out that runs another quality (or other methods) adds
    its units to results.json; units it re-ran replace the earlier ones; nothing is dropped."""
    from vmerpo.benchmarks.learning import merge_earlier

    def unit(q, m, task, v):
        return {"quality": q, "method": m, "task": task, "draw": 0, "success_rate": v}

    rows_now = [unit("random_heavy", "bc", 40, 0.2), unit("random_heavy", "merpo", 40, 0.7)]
    beh_now = {("random_heavy", 40, 0): 0.1}
    assert merge_earlier({}, rows_now, beh_now, ["bc", "merpo"], ["random_heavy"]) == (
        rows_now, beh_now, ["bc", "merpo"], ["random_heavy"])  # no earlier results: as they are
    earlier = {"methods": ["bc", "rac", "merpo"], "units": [
        unit("medium", "bc", 40, 0.4), unit("medium", "rac", 40, 0.5), unit("medium", "merpo", 40, 0.9),
        unit("random_heavy", "bc", 40, 0.0)],  # re-run now: replaced
        "behaviour_units": [{"quality": "medium", "task": 40, "draw": 0, "success_rate": 0.3},
                            {"quality": "random_heavy", "task": 40, "draw": 0, "success_rate": 0.9}]}
    rows, beh, methods, qualities = merge_earlier(earlier, rows_now, beh_now, ["bc", "merpo", "merpo_x"],
                                                  ["random_heavy"])
    assert qualities == ["medium", "random_heavy"] and methods == ["bc", "rac", "merpo", "merpo_x"]
    assert sorted((r["quality"], r["method"], r["success_rate"]) for r in rows) == [
        ("medium", "bc", 0.4), ("medium", "merpo", 0.9), ("medium", "rac", 0.5),
        ("random_heavy", "bc", 0.2), ("random_heavy", "merpo", 0.7)]
    assert beh == {("medium", 40, 0): 0.3, ("random_heavy", 40, 0): 0.1}  # this invocation's logs win
    res = summarize(rows, beh, methods, qualities)
    assert set(res) == {"medium", "random_heavy"} and "rac" in res["medium"] and "rac" not in res["random_heavy"]


def test_markdown_and_plot_come_from_the_results(tmp_path):
    res = summarize(rows(), {}, ["bc", "merpo"], ["medium"])
    doc = {"family": "reach-v3", "track": "state", "budget": "smoke", "commit": "abc", "invocations": [{}],
           "total_minutes_all_invocations": 3.0, "results": {"state": res},
           "settings": {"heldout_tasks": [40, 41], "draws": 2, "heldout_episodes": 5, "eval_episodes": 20,
                        "hand_init_noise": 0.05, "aim": "tool-centre"}}
    text = results_markdown(doc)
    line = next(x for x in text.splitlines() if x.startswith("| merpo |"))
    d = res["medium"]["merpo"]["paired"]["vs_bc"]
    assert f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" in line
    assert "| 200 | 5.0 | 2.0 | 4 |" in line  # return, final and closest distance in cm, units
    assert "commit abc." in text
    # a resumed --out names every invocation's commit, not only the last one's
    two = {**doc, "invocations": [{"commit": "1111111aaaa"}, {"commit": "2222222bbbb"}], "commit": "2222222bbbb"}
    assert "commits 1111111, 2222222 " in results_markdown(two)
    dirty = {**two, "invocations": [{"commit": "1111111aaaa+dirty"}, {}]}  # an old invocation without one
    assert "commits 1111111+dirty, unknown " in results_markdown(dirty)
    plot(res, ["bc", "merpo"], ["medium"], tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_bad_subsets_are_refused():
    assert _subset("bc, merpo", ("merpo", "bc"), "--methods") == ["bc", "merpo"]
    with pytest.raises(ValueError, match="--methods: unknown"):
        _subset("bc,sac", ("merpo", "bc"), "--methods")


def test_an_out_made_with_other_settings_is_refused_and_resume_is_explicit(tmp_path):
    settings = {"version": 2, "track": "state", "draws": 3, "aim": "tool-centre", "hand_init_noise": 0.05}
    check_out(tmp_path / "new", settings, resume=False)  # nothing there: fine
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=r"made with draws=3, this run asks for 1: use another --out"):
        check_out(tmp_path / "o", {**settings, "draws": 1}, resume=True)
    with pytest.raises(ValueError, match='made with track="state", this run asks for "pixel"'):
        check_out(tmp_path / "o", {**settings, "track": "pixel"}, resume=True)
    with pytest.raises(ValueError, match="pass --resume to continue it"):
        check_out(tmp_path / "o", settings, resume=False)
    check_out(tmp_path / "o", settings, resume=True)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "results.json").write_text("{}")  # a first-benchmark --out
    with pytest.raises(ValueError, match="not a learning benchmark v2 --out"):
        check_out(tmp_path / "v1", settings, resume=True)


def _bench(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "vmerpo", "bench", "learning", "--family", "reach",
                           "--out", str(tmp_path / "b"), "--no-progress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, why", [
    (("--heldout-tasks", "0"), "must be at least 1"),
    (("--heldout-tasks", "11"), "has 10 held-out tasks"),
    (("--draws", "0"), "--draws 0: must be at least 1"),
    (("--hand-init-noise", "0.5"), "hand start noise 0.5 m not supported"),
    (("--qualities", "medium,great"), "--qualities: unknown ['great']"),
    (("--episodes-per-task", "0"), "--episodes-per-task 0: must be at least 1"),
    (("--track", "pixel", "--learner-steps", "0"), "--learner-steps 0: must be at least 1"),
])
def test_bad_arguments_are_one_line_errors_before_anything_runs(tmp_path, args, why):
    proc = _bench(tmp_path, *args)
    assert proc.returncode == 2 and why in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_a_rerun_with_other_noise_or_aim_is_refused_in_one_line(tmp_path):
    pytest.importorskip("metaworld")
    out = tmp_path / "b"
    out.mkdir()
    base = ["--track", "state", "--budget", "smoke"]
    # the settings file a first run writes, without running it: call the settings code directly
    from vmerpo.benchmarks import learning

    args = learning.parse_args([*base, "--out", str(out)])
    from sim.envs import task_set

    ts = task_set("reach-v3")
    design = learning.DESIGNS["smoke"]
    s = learning.settings_of(args, design, "reach-v3", ts.split_ids("test")[:4], ts.split_ids("train")[:20])
    (out / "settings.json").write_text(json.dumps(s))
    for extra, why in ((["--hand-init-noise", "0.02"], "hand_init_noise=0.05, this run asks for 0.02"),
                       (["--aim", "hand"], 'aim="tool-centre", this run asks for "hand"'),
                       (["--draws", "2"], "draws=1, this run asks for 2"),
                       (["--episodes-per-task", "32"], "episodes_per_task=8, this run asks for 32"),
                       (["--learner-steps", "10000"], "made with state_budget="),
                       (["--track", "pixel"], 'track="state", this run asks for "pixel"')):
        proc = _bench(tmp_path, *base, *extra, "--resume")
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr[-2000:]
        assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["settings.json"]  # nothing ran


def test_state_logs_equal_the_image_logs_of_the_same_seeds(tmp_path):
    """The state track's logs are the pixel track's: same seeds, same states, actions, rewards."""
    pytest.importorskip("metaworld")
    from learning.store import EpisodeStore
    from sim.collect import CollectConfig, collect
    from vmerpo.benchmarks.learning_state import collect_state_log

    kw = dict(family="reach-v3", tasks=[40, 41], episodes_per_task=1, quality="medium", seed=201,
              hand_init_noise=0.05, aim=True)
    collect(CollectConfig(out=str(tmp_path / "img.zarr"), workers=0, **kw), progress=False)
    store = EpisodeStore.open(str(tmp_path / "img.zarr"))
    log = collect_state_log(tmp_path / "s.npz", "reach-v3", "medium", [40, 41], 1, 201, 0.05, True)
    for key in ("state", "action", "reward"):
        np.testing.assert_array_equal(log[key], store.read(key, 0, int(store.episode_ends[-1])))
    np.testing.assert_array_equal(log["episode_ends"], store.episode_ends)
    np.testing.assert_array_equal(log["episode_success"], store.episode_success)
    assert (tmp_path / "s.npz").exists()
    again = collect_state_log(tmp_path / "s.npz", "reach-v3", "medium", [40, 41], 1, 201, 0.05, True)
    np.testing.assert_array_equal(again["state"], log["state"])  # the cache


def test_the_peer_adapter_trains_d3rlpy_on_our_transitions():
    from vmerpo.benchmarks import peer

    why = peer.available()
    if why:
        pytest.skip(why)
    rng = np.random.default_rng(0)
    n = 600
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    act = np.tanh(obs[:, :2] * 2).astype(np.float32)  # actions a function of the state
    data = {"obs": obs, "act": act, "rew": np.zeros(n, np.float32), "next_obs": obs, "done": np.zeros(n, np.float32)}
    algo = peer.make("bc", 3, 2, peer.PeerConfig(hidden=(64, 64), batch=64), seed=0)
    before = float(np.abs(peer.act(algo, obs) - act).mean())
    peer.fit(algo, data, 400, seed=0)
    after = float(np.abs(peer.act(algo, obs) - act).mean())
    assert after < 0.5 * before
    tuned = peer.finetuned(algo, {**data, "act": -act}, 100, seed=1)
    assert np.abs(peer.act(tuned, obs) - peer.act(algo, obs)).mean() > 0.01  # the copy moved
    assert float(np.abs(peer.act(algo, obs) - act).mean()) == pytest.approx(after)  # the original did not
    iql = peer.make("iql", 3, 2, peer.PeerConfig(hidden=(32, 32), batch=32), seed=0)
    stats = peer.fit(iql, {**data, "rew": rng.normal(size=n).astype(np.float32)}, 20, seed=0)
    assert {"critic_loss", "v_loss", "actor_loss"} <= set(stats) and all(np.isfinite(list(stats.values())))


def test_the_power_design_adds_draws_on_medium_for_the_core_methods(tmp_path):
    """`--budget power` is the interval claim's design: 10 held-out tasks x 20 independent log
    draws on medium, MerPO, BC and the meta-policy unless --methods says otherwise."""
    from vmerpo.benchmarks import learning

    args = learning.parse_args(["--budget", "power", "--out", str(tmp_path / "p")])
    design, methods, by_quality = learning.resolve(args)
    assert (design.heldout_tasks, design.draws, design.qualities) == (10, 20, ("medium",))
    assert design.heldout_tasks * design.draws >= 90  # experiments/21: ~90 units for +-0.10
    assert methods == ["bc", "merpo", "meta_policy"] and by_quality == {"medium": methods}
    seeds = learning.log_seeds("medium", design.draws)["heldout"]
    assert len(set(seeds)) == design.draws  # every draw its own collection seed
    other = {s for q in learning.QUALITIES if q != "medium" for s in learning.log_seeds(q, design.draws)["heldout"]}
    assert not set(seeds) & other  # and none another quality's
    args = learning.parse_args(["--budget", "power", "--methods", "bc,rac", "--out", str(tmp_path / "p")])
    assert learning.resolve(args)[1] == ["bc", "rac"]  # asked for
    args = learning.parse_args(["--budget", "full", "--out", str(tmp_path / "p")])
    assert "iql_finetuned" in learning.resolve(args)[1]  # other budgets: all of the track's


def test_the_state_ablations_are_a_second_invocation_and_the_pixel_s_run_by_default(tmp_path):
    """State `full` runs the issue's methods on every quality and no ablation (single-task RAC
    among them), so that it stays well under 30 min; `--ablations medium` adds them on medium
    only, and `--methods` still names any method for every quality. The pixel track keeps its
    ablations on medium and random_heavy by default."""
    from vmerpo.benchmarks import learning
    from vmerpo.benchmarks.learning_pixel import PIXEL_ABLATIONS
    from vmerpo.benchmarks.learning_state import STATE_ABLATIONS, STATE_METHODS

    out = ["--out", str(tmp_path / "s")]
    by_q = learning.resolve(learning.parse_args(["--budget", "full", *out]))[2]
    core = [m for m in STATE_METHODS if m not in STATE_ABLATIONS]
    assert "rac" in STATE_ABLATIONS and {"bc", "merpo", "meta_policy", "iql_finetuned", "iql_oracle"} <= set(core)
    assert by_q == {q: core for q in learning.QUALITIES}
    with_abl = learning.parse_args(["--budget", "full", "--ablations", "medium", *out])
    design, _, by_q = learning.resolve(with_abl)
    assert by_q["medium"] == list(STATE_METHODS) and by_q["expert"] == core
    # the second invocation resumes the first: --ablations is not a setting of the --out
    plain = learning.parse_args(["--budget", "full", *out])
    assert learning.settings_of(with_abl, design, "reach-v3", [40], [0]) == learning.settings_of(plain, design, "reach-v3", [40], [0])
    by_q = learning.resolve(learning.parse_args(["--budget", "full", "--methods", "bc,rac", *out]))[2]
    assert by_q == {q: ["bc", "rac"] for q in learning.QUALITIES}
    pixel = ["--track", "pixel", "--budget", "full", "--qualities", "expert,random_heavy", "--methods", "bc,merpo",
             "--device", "cpu", *out]
    args = learning.parse_args(pixel)
    args.methods = None  # the default methods, with the pixel track's default ablation qualities
    by_q = learning.methods_by_quality(args, ["bc", "merpo", "merpo_no_uncertainty"], ("expert", "random_heavy"))
    assert "merpo_no_uncertainty" in PIXEL_ABLATIONS
    assert by_q == {"expert": ["bc", "merpo"], "random_heavy": ["bc", "merpo", "merpo_no_uncertainty"]}


def test_pixel_full_without_a_gpu_runs_medium_on_one_world_model(tmp_path, capsys):
    import torch

    from vmerpo.benchmarks import learning
    from vmerpo.benchmarks.learning_pixel import cpu_full, pixel_budget

    base = ["--track", "pixel", "--budget", "full", "--device", "cpu", "--methods", "bc,merpo", "--out", str(tmp_path)]
    args = learning.parse_args(base)
    assert cpu_full(args) and pixel_budget(args).wm_seeds == 1 and pixel_budget(args).config == "cpu"
    assert learning.resolve(args)[0].qualities == ("medium",)
    assert "pixel full without a GPU: medium on one world model" in capsys.readouterr().err
    args = learning.parse_args([*base, "--wm-seeds", "2", "--qualities", "expert,medium"])
    assert pixel_budget(args).wm_seeds == 2 and learning.resolve(args)[0].qualities == ("expert", "medium")
    assert capsys.readouterr().err == ""  # asked for: no note
    for other in (["--track", "state", "--budget", "full"], ["--track", "pixel", "--budget", "smoke"]):
        assert not cpu_full(learning.parse_args([*other, "--device", "cpu", "--out", str(tmp_path)]))
    if torch.cuda.is_available():
        args = learning.parse_args(["--track", "pixel", "--budget", "full", "--device", "auto", "--out", str(tmp_path)])
        assert not cpu_full(args) and pixel_budget(args).wm_seeds == 2 and pixel_budget(args).config == "paper"


def test_peer_methods_without_d3rlpy_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    from vmerpo.benchmarks import learning, peer

    monkeypatch.setattr(peer, "available", lambda: "d3rlpy is not installed: run `make peer`")
    for track, asked in (("state", "bc_pooled,iql_finetuned,iql_oracle,iql_pooled"),
                         ("pixel", "iql_finetuned")):
        args = learning.parse_args(["--track", track, "--budget", "smoke", "--device", "cpu",
                                    "--out", str(tmp_path / "o")])
        with pytest.raises(RuntimeError) as err:
            learning.resolve(args)
        assert str(err.value) == f"d3rlpy is not installed: run `make peer`; or leave out --methods {asked}"
    args = learning.parse_args(["--budget", "smoke", "--ablations", "medium", "--out", str(tmp_path / "o")])
    with pytest.raises(RuntimeError, match="iql_finetuned,iql_inferred,iql_oracle"):
        learning.resolve(args)
    args = learning.parse_args(["--track", "pixel", "--budget", "smoke", "--methods", "bc,merpo",
                                "--out", str(tmp_path / "o")])
    assert learning.resolve(args)[1] == ["bc", "merpo"]  # without the peer: fine
    assert not (tmp_path / "o").exists()


def test_the_state_track_sees_the_puck_on_push_and_only_the_robot_on_reach(tmp_path):
    """Push's puck moves with the task, so its state track appends the object's position; reach
    keeps the robot's 11 numbers (its logs equal the pixel logs' states)."""
    pytest.importorskip("metaworld")
    from vmerpo.benchmarks.learning_state import OBJECT_FAMILIES, collect_state_log, state_env

    assert OBJECT_FAMILIES == ("push-v3",)
    log = collect_state_log(tmp_path / "p.npz", "push-v3", "medium", [40, 41], 1, 7, 0.05, True)
    assert log["state"].shape[1] == 11 + 3
    env = state_env("push-v3", 0.05)
    try:
        env.set_task(40)
        obs = env.reset(seed=3)
        puck = env.privileged_observation()[4:7]
        np.testing.assert_allclose(obs["state"][11:], puck, atol=1e-6)
        obs, *_ = env.step(np.zeros(4, np.float32))
        np.testing.assert_allclose(obs["state"][11:], env.privileged_observation()[4:7], atol=1e-6)
        env.set_task(41)
        assert np.abs(env.reset(seed=3)["state"][11:] - puck).max() > 0.01  # another task, another puck
    finally:
        env.close()
    first = np.concatenate([[0], log["episode_ends"][:-1]])
    assert np.abs(log["state"][first[0], 11:] - log["state"][first[1], 11:]).max() > 0.01
    reach = state_env("reach-v3", 0.05)
    try:
        reach.set_task(40)
        assert reach.reset(seed=3)["state"].shape == (11,)
    finally:
        reach.close()


def test_each_quality_runs_as_two_jobs_the_costliest_first():
    """`job_plan`: MerPO v2's methods (sharing its meta-model and task inference) and the others
    are separate jobs, ordered by cost, so that 2 workers end together; none is lost or doubled."""
    from vmerpo.benchmarks.learning_state import (
        STATE_ABLATIONS,
        STATE_METHODS,
        V2_METHODS,
        job_plan,
    )

    core = [m for m in STATE_METHODS if m not in STATE_ABLATIONS]
    plan = job_plan({"expert": core, "medium": list(STATE_METHODS), "mixed": core})
    assert len(plan) == 6
    assert plan[0] == ("medium", "v2", [m for m in STATE_METHODS if m in V2_METHODS])  # the ablations' job
    for q, ms in (("expert", core), ("medium", list(STATE_METHODS))):
        got = [m for qq, _, part in plan if qq == q for m in part]
        assert sorted(got) == sorted(ms)
    for _, group, part in plan:
        assert all((m in V2_METHODS) == (group == "v2") for m in part)
    assert job_plan({"medium": ["bc", "rac"]}) == [("medium", "other", ["bc", "rac"])]


def test_a_quality_s_two_jobs_share_its_logs_and_evaluate_side_by_side(tmp_path):
    """The two jobs of one quality (tiny budgets): the second loads the logs the first
    collected; every method's row holds its evaluation episodes; MerPO v2's rows carry the
    task inference's goal error."""
    pytest.importorskip("metaworld")
    pytest.importorskip("d3rlpy", reason="the peer (make peer) is not installed")
    from vmerpo.benchmarks.learning import log_seeds
    from vmerpo.benchmarks.learning_state import run_quality

    tiny = dict(pretrain_steps=20, meta_steps=2, adapt_steps=20, v2_meta_steps=20, bc_steps=20, iql_steps=20,
                iql_finetune_steps=5)
    res = {}
    for group, ms in (("v2", ["merpo", "meta_policy"]), ("other", ["bc", "iql_pooled"])):
        job = {"out": str(tmp_path / "state"), "quality": "medium", "group": group, "family": "reach-v3",
               "state_budget": tiny, "methods": ms, "train_tasks": [0, 1, 2], "episodes_per_task": 2,
               "heldout": [40], "heldout_episodes": 2, "draws": 1, "eval_episodes": 3,
               "seeds": log_seeds("medium", 1), "hand_init_noise": 0.05, "aim": True, "seed": 0}
        res[group] = run_quality(job)[0]
    assert res["other"]["timings"]["collect_s"] < 0.2 * res["v2"]["timings"]["collect_s"]  # loaded, not collected
    assert res["v2"]["behaviour"] == res["other"]["behaviour"]
    rows = {r["method"]: r for g in res.values() for r in g["rows"]}
    assert sorted(rows) == ["bc", "iql_pooled", "merpo", "meta_policy"]
    assert all(r["episodes"] == 3 and 0.0 <= r["success_rate"] <= 1.0 and r["final_distance"] > 0 for r in rows.values())
    assert rows["merpo"]["inference_goal_error_cm"] >= 0 and rows["iql_pooled"]["zero_shot"]
    # MerPO's omega on states is the solved-log rule's: 0 unless every episode of the log succeeded
    evals = tmp_path / "state" / "evals" / "medium"
    merpo = evals / "merpo_t40_d0.json"
    assert res["v2"]["behaviour"]["40,0"] < 1.0  # not solved: the rule's omega 0, not the fixed 0.4
    w = 0.0
    assert json.loads(merpo.read_text())["omega"] == w
    # a later invocation's omega sweep (--ablations): the sweep's learner at MerPO's omega is MerPO's,
    # so its unit is MerPO's evaluation, not a second adaptation; the other two are adapted
    key = {0.0: "0", 0.4: "04"}[w]
    job["methods"], job["group"] = ["merpo", "merpo_omega0", "merpo_omega04", "merpo_omega1"], "v2"
    again = run_quality(job)[0]
    assert f"merpo_omega{w:g}_adapt_s" not in again["timings"] and "merpo_omega1_adapt_s" in again["timings"]
    assert {f"merpo_omega{o:g}_adapt_s" for o in (0.0, 0.4)} - {f"merpo_omega{w:g}_adapt_s"} <= set(again["timings"])
    sweep = evals / f"merpo_omega{key}_t40_d0.json"
    assert sweep.read_text() == merpo.read_text()
    # the other way round: the sweep's evaluation stands for MerPO's
    merpo.unlink()
    job["methods"] = ["merpo"]
    assert f"merpo_omega{w:g}_adapt_s" not in run_quality(job)[0]["timings"] and merpo.read_text() == sweep.read_text()
    # an evaluation that does not say its omega (made before omegas were recorded) is not reused
    merpo.unlink()
    sweep.write_text(json.dumps({k: v for k, v in json.loads(sweep.read_text()).items() if k != "omega"}))
    assert f"merpo_omega{w:g}_adapt_s" in run_quality(job)[0]["timings"] and json.loads(merpo.read_text())["omega"] == w


def test_the_state_tracks_merpo_follows_the_fixed_omega_when_the_job_asks_for_it(tmp_path):
    """A job that names the fixed rule (the image presets' and MerPOv2Config's default) adapts
    MerPO at omega 0.4 whatever the log; the state track's default is the solved-log rule."""
    pytest.importorskip("metaworld")
    from learning.merpo_v2 import MerPOv2Config
    from vmerpo.benchmarks.learning import log_seeds
    from vmerpo.benchmarks.learning_state import (
        STATE_BUDGETS,
        STATE_OMEGA_RULE,
        run_quality,
        state_budget_dict,
        state_v2_config,
    )

    assert STATE_OMEGA_RULE == "solved-log" != MerPOv2Config().omega_rule
    assert state_v2_config(STATE_BUDGETS["full"], 0).omega_rule == "solved-log"
    tiny = dict(pretrain_steps=20, meta_steps=2, adapt_steps=20, v2_meta_steps=20, bc_steps=20, iql_steps=20,
                iql_finetune_steps=5)
    assert set(tiny) == set(state_budget_dict("full"))
    job = {"out": str(tmp_path / "state"), "quality": "random_heavy", "group": "v2", "family": "reach-v3",
           "state_budget": tiny, "methods": ["merpo", "merpo_no_embedding"], "train_tasks": [0, 1, 2],
           "episodes_per_task": 2,
           "heldout": [40], "heldout_episodes": 2, "draws": 1, "eval_episodes": 2,
           "seeds": log_seeds("random_heavy", 1), "hand_init_noise": 0.05, "aim": True, "seed": 0,
           "omega_rule": "fixed"}
    res = run_quality(job)[0]
    assert res["behaviour"]["40,0"] < 1.0  # a random-heavy log: the solved-log rule would say 0
    evals = tmp_path / "state" / "evals" / "random_heavy"
    assert json.loads((evals / "merpo_t40_d0.json").read_text())["omega"] == 0.4
    assert json.loads((evals / "inference_t40_d0.json").read_text())["omega_rule"] == "fixed"
    # the ablation without the embedding follows the same rule and records its learner
    blind = json.loads((evals / "merpo_no_embedding_t40_d0.json").read_text())
    assert (blind["start"], blind["omega"]) == ("meta", 0.4)
    # resumed under the solved-log rule, MerPO's kept evaluation (omega 0.4) is not its learner (omega 0)
    with pytest.raises(ValueError, match="holds MerPO from meta at omega 0.4, this run's rules choose meta at omega 0"):
        run_quality({**job, "methods": ["merpo"], "omega_rule": "solved-log"})
    # an --out whose MerPO units were made under the fixed rule (before the change) is refused
    from vmerpo.benchmarks import learning

    args = learning.parse_args(["--track", "state", "--budget", "smoke", "--out", str(tmp_path / "old")])
    s = learning.settings_of(args, learning.DESIGNS["smoke"], "reach-v3", [40], [0])
    assert s["omega_rule"] == "solved-log"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "settings.json").write_text(json.dumps({**s, "omega_rule": "fixed"}))
    with pytest.raises(ValueError, match='made with omega_rule="fixed", this run asks for "solved-log"'):
        learning.check_out(tmp_path / "old", s, resume=True)


def test_more_meta_train_episodes_and_learner_steps_reach_the_design_and_the_state_learners(tmp_path):
    """--episodes-per-task and --learner-steps (the push design of experiments/26) change the
    design's meta-train logs and the state track's MerPO v2 / pooled d3rlpy updates, nothing else."""
    from vmerpo.benchmarks import learning
    from vmerpo.benchmarks.learning_state import state_budget_dict

    args = learning.parse_args(["--budget", "full", "--episodes-per-task", "32", "--learner-steps", "10000",
                                "--out", str(tmp_path / "p")])
    design = learning.resolve(args)[0]
    assert design.episodes_per_task == 32 and design.draws == 3 and design.heldout_episodes == 5
    s = learning.settings_of(args, design, "push-v3", [40], list(range(20)))
    base = state_budget_dict("full")
    assert s["episodes_per_task"] == 32
    assert s["state_budget"] == {**base, "v2_meta_steps": 10000, "iql_steps": 10000}
    assert base["v2_meta_steps"] == 3000 and base["adapt_steps"] == s["state_budget"]["adapt_steps"]
    # the pixel track: MerPO v2's meta-training and the peer's pooled updates, in its settings
    from vmerpo.benchmarks.learning_pixel import pixel_budget

    pix = ["--track", "pixel", "--budget", "full", "--device", "cpu", "--out", str(tmp_path / "q")]
    base_pix = pixel_budget(learning.parse_args(pix))
    args = learning.parse_args([*pix, "--learner-steps", "12000"])
    b = pixel_budget(args)
    assert (base_pix.v2_meta_steps, b.v2_meta_steps, b.peer_steps) == (0, 12000, 12000)
    assert b.adapt_steps == base_pix.adapt_steps and b.wm_steps == base_pix.wm_steps
    design = learning.resolve(args)[0]
    settings = learning.settings_of(args, design, "reach-v3", [40], list(range(20)))
    assert settings["pixel_budget"]["v2_meta_steps"] == 12000
    # MerPO's start rule comes with the preset (`cpu`): an --out from before it (no key) is refused
    assert settings["start_rule"] == "solved-log"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "settings.json").write_text(json.dumps({k: v for k, v in settings.items() if k != "start_rule"}))
    with pytest.raises(ValueError, match="start_rule"):
        learning.check_out(tmp_path / "old", settings, resume=True)


def test_a_torch_policy_evaluated_side_by_side_matches_one_episode_at_a_time():
    """The state track's lockstep evaluation of a torch actor (batched forward passes, which
    round differently from one-row passes) gives the episodes one-at-a-time evaluation gives:
    the same successes, distances and returns to float rounding."""
    pytest.importorskip("metaworld")
    import torch

    from learning.rac import TanhGaussianActor
    from vmerpo.benchmarks.learning_state import (
        FeaturePolicy,
        actor_fn,
        eval_envs,
        evaluate_policy,
        state_env,
    )

    torch.manual_seed(3)
    actor = TanhGaussianActor(11, 4, 64, 2)

    class Standardise:  # the shape of Features: roughly unit-scale inputs
        def __call__(self, state, goal=None):
            return np.asarray(state, np.float32) * 2.0

    policy = FeaturePolicy(actor_fn(actor), Standardise())
    env, envs = state_env("reach-v3", 0.05), eval_envs("reach-v3", 0.05, n=4)
    seq, lock = evaluate_policy(env, policy, 41, 6), evaluate_policy(envs, policy, 41, 6)
    for e in [env, *envs]:
        e.close()
    assert seq["episodes"] == lock["episodes"] == 6
    assert seq["success_rate"] == lock["success_rate"]
    np.testing.assert_allclose([seq["final_distance"], seq["min_distance"], seq["mean_return"]],
                               [lock["final_distance"], lock["min_distance"], lock["mean_return"]], rtol=1e-4)


def test_a_pixel_omega_sweep_learner_at_merpo_s_omega_is_merpo_s_learner(tmp_path):
    """Where the unit's MerPO (adapted now or in an earlier invocation) records the sweep's
    omega, the sweep method is that learner: it is not adapted again, and its row waits for
    MerPO's one evaluation (or takes its cached one); at another omega, from scratch (MerPO's
    solved-log start), or once adapted on its own (a resumed --out), it keeps its own directory."""
    from vmerpo.benchmarks.learning_pixel import evaluation_plan, omega_twins

    def adapted(name: str, omega: float | None, start: str = "meta-policy") -> str:
        d = tmp_path / "adapted" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"method": "merpo", "omega": omega, "start": start}))
        (d / "policy.pt").write_bytes(b"")
        return str(d)

    new = str(tmp_path / "adapted")
    jobs = [("medium", 0, 40, 0, "merpo", adapted("medium_s0_d0_t40_merpo", 0.4)),
            ("medium", 0, 40, 0, "merpo_omega04", f"{new}/medium_s0_d0_t40_merpo_omega04"),
            ("medium", 0, 40, 0, "merpo_omega0", f"{new}/medium_s0_d0_t40_merpo_omega0"),
            ("medium", 0, 41, 0, "merpo_omega0", adapted("medium_s0_d0_t41_merpo_omega0", 0.0)),  # adapted before
            ("medium", 0, 41, 0, "merpo_omega1", f"{new}/medium_s0_d0_t41_merpo_omega1"),
            ("medium", 0, 42, 0, "merpo_omega04", f"{new}/medium_s0_d0_t42_merpo_omega04"),  # no MerPO yet
            # MerPO's solved-log start: omega 1 from scratch is not the sweep's omega 1 from pi_c
            ("medium", 0, 43, 0, "merpo", adapted("medium_s0_d0_t43_merpo", 1.0, "scratch")),
            ("medium", 0, 43, 0, "merpo_omega1", f"{new}/medium_s0_d0_t43_merpo_omega1")]
    adapted("medium_s0_d0_t41_merpo", 0.0)  # an earlier invocation's MerPO, not among these jobs
    adapted("medium_s0_d0_t42_merpo", 0.4)
    (tmp_path / "adapted" / "medium_s0_d0_t42_merpo" / "policy.pt").unlink()  # killed before it finished
    twins = omega_twins(jobs)
    assert twins == {jobs[1][5]: jobs[0][5]}
    aliased = [(*j[:5], twins.get(j[5], j[5])) for j in jobs]
    (tmp_path / "evals").mkdir()
    rows, todo = evaluation_plan(tmp_path / "evals", "reach-v3", aliased, 20, 0.05, False)
    assert [r["method"] for r in rows] == [j[4] for j in jobs] and rows[1]["policy"] == jobs[0][5]
    waiting = todo[tmp_path / "evals" / "medium_s0_d0_t40_merpo.json"][0]
    assert waiting == [rows[0], rows[1]] and len(todo) == len(jobs) - 1  # one evaluation for the twins
    (tmp_path / "evals" / "medium_s0_d0_t40_merpo.json").write_text(json.dumps({"success_rate": 0.85}))
    rows, todo = evaluation_plan(tmp_path / "evals", "reach-v3", aliased, 20, 0.05, False)
    assert [r.get("success_rate") for r in rows[:2]] == [0.85, 0.85] and len(todo) == len(jobs) - 2


def test_each_pixel_meta_training_kind_differs_from_v2_in_its_ablated_term_only():
    """`merpo_no_uncertainty_meta`'s run is MerPO v2's at lambda_u 0 (its meta-training, and so
    every adaptation from its saved config), `merpo_no_embedding`'s without the embedding,
    `merpo_uncertainty_excess`'s penalises only the excess disagreement; every other setting is
    v2's. An unknown kind is refused."""
    import dataclasses

    from learning.merpo_train import RunConfig
    from vmerpo.benchmarks.learning_pixel import BUDGETS, METHOD_PLAN, meta_train_config

    budget = BUDGETS["full"]
    v2 = meta_train_config("v2", budget, "cpu", 3)
    assert v2.algorithm == "merpo_v2" and v2.merpo_v2.use_embedding and v2.merpo_v2.seed == 3
    assert v2.merpo_v2.rac.uncertainty_penalty > 0
    nounc = meta_train_config(METHOD_PLAN["merpo_no_uncertainty_meta"][0], budget, "cpu", 3)
    noemb = meta_train_config(METHOD_PLAN["merpo_no_embedding"][0], budget, "cpu", 3)
    assert nounc.merpo_v2.rac.uncertainty_penalty == 0.0 and nounc.merpo_v2.use_embedding
    assert not noemb.merpo_v2.use_embedding
    assert noemb.merpo_v2.rac.uncertainty_penalty == v2.merpo_v2.rac.uncertainty_penalty
    assert dataclasses.replace(nounc.merpo_v2.rac, uncertainty_penalty=v2.merpo_v2.rac.uncertainty_penalty) \
        == v2.merpo_v2.rac
    assert dataclasses.replace(nounc.merpo_v2, rac=v2.merpo_v2.rac) == v2.merpo_v2
    assert dataclasses.replace(noemb.merpo_v2, use_embedding=True) == v2.merpo_v2
    excess = meta_train_config(METHOD_PLAN["merpo_uncertainty_excess"][0], budget, "cpu", 3)
    assert v2.merpo_v2.uncertainty_quantile == 0.0 and 0 < excess.merpo_v2.uncertainty_quantile < 1
    assert dataclasses.replace(excess.merpo_v2, uncertainty_quantile=0.0) == v2.merpo_v2
    assert RunConfig.from_dict(excess.to_dict()).merpo_v2.uncertainty_quantile == excess.merpo_v2.uncertainty_quantile
    for cfg in (nounc, noemb, excess):
        assert (cfg.merpo, cfg.algorithm, cfg.world_model) == (v2.merpo, v2.algorithm, v2.world_model)
    assert RunConfig.from_dict(nounc.to_dict()).merpo_v2.rac.uncertainty_penalty == 0.0  # what adapt reads
    smoke = BUDGETS["smoke"]  # a budget that rescales the meta-training keeps the ablated term
    assert smoke.v2_meta_steps and smoke.v2_meta_steps != v2.merpo_v2.meta_steps
    small = meta_train_config("v2_nounc", smoke, "cpu", 3).merpo_v2
    assert small.meta_steps == smoke.v2_meta_steps and small.rac.uncertainty_penalty == 0.0
    v1 = meta_train_config("v1", budget, "cpu", 3)
    assert v1.algorithm != "merpo_v2" and v1.merpo.seed == 3
    with pytest.raises(ValueError, match="run kind 'v3'"):
        meta_train_config("v3", budget, "cpu", 3)
