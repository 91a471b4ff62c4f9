"""Behaviour policies and the evaluation harness."""

from __future__ import annotations

import numpy as np
import pytest

from sim.envs import make_env
from sim.evaluate import evaluate, run_episode
from sim.policies import ExpertPolicy, MixedPolicy, describe, make_behavior_policy


class RecordingPolicy:
    """Proposes wild actions and records what the harness says was applied."""

    def __init__(self):
        self.applied, self.proposed, self.resets = [], [], 0

    def reset(self):
        self.resets += 1

    def act(self, obs):
        assert obs["image"].dtype == np.uint8 and obs["state"].dtype == np.float32
        a = np.array([5.0, -5.0, np.nan if len(self.proposed) == 3 else 0.2, 1.0])
        self.proposed.append(a)
        return a

    def set_applied_action(self, applied):
        self.applied.append(np.asarray(applied))


def test_harness_limits_every_action_and_reports_the_applied_one():
    env = make_env("reach-v3", max_episode_steps=8)
    pol = RecordingPolicy()
    r = run_episode(env, pol, env.safety_limiter(), task_id=1, seed=0, record=True)
    env.close()
    assert pol.resets == 1 and len(pol.applied) == 8
    applied = np.stack(pol.applied)
    assert np.all(np.isfinite(applied)) and np.all(np.abs(applied) <= 1.0)
    np.testing.assert_array_equal(applied, r.data["action"])  # the store records it too
    assert np.all(applied[3] == 0.0)  # NaN -> the hold action
    assert np.all(np.abs(np.diff(applied, axis=0)) <= 1.0 + 1e-6)  # rate limit (1 / step)
    assert r.limiter["invalid"] == 1 and r.limiter["clipped"] >= 7


@pytest.mark.parametrize("family", ["reach-v3", "push-v3", "drawer-close-v3", "door-open-v3"])
def test_expert_succeeds_on_held_out_tasks(family):
    env = make_env(family)
    res = evaluate(make_behavior_policy("expert", env), env, env.tasks.select("test")[:2], 1, 0)
    env.close()
    assert res["success_rate"] == 1.0, res["per_task"]
    assert set(res) >= {"success_rate", "mean_return", "mean_length", "per_task"}


def test_reach_expert_aimed_at_the_tool_centre_puts_it_on_the_goal_with_margin():
    """Meta-World's reach expert steers the hand onto the goal, leaving the tool centre (where
    success is measured, 5 cm) 4.5 cm away; `tool_centre_aimed` puts the tool centre there."""
    env = make_env("reach-v3", max_episode_steps=100)
    for aimed in (False, True):
        pol = ExpertPolicy(env, tool_centre_aimed=aimed)
        assert pol.behavior.endswith("+tool-centre-aim") == aimed
        for task in (40, 41):
            env.set_task(task)
            obs = env.reset()
            for _ in range(env.max_episode_steps):
                obs, *_ = env.step(pol.act(obs))
            tool, hand = (np.linalg.norm(p - env._mw._target_pos) for p in (env.tool_centre(), env.ee_position()))
            if aimed:
                assert tool < 0.02 and hand > 0.03, (task, tool, hand)
            else:
                assert 0.04 < tool < 0.05 and hand < 0.02, (task, tool, hand)
    env.close()


def test_random_fails_push():
    env = make_env("push-v3")
    res = evaluate(make_behavior_policy("random", env), env, [40, 41], 1, seed=0)
    env.close()
    assert res["success_rate"] == 0.0 and res["mean_return"] < 100


def test_policies_are_seeded_per_episode_and_mixed_records_its_member():
    env = make_env("push-v3", max_episode_steps=20)
    lim = env.safety_limiter()
    pol = make_behavior_policy("medium", env)
    a = run_episode(env, pol, lim, 0, seed=5, record=True).data
    run_episode(env, pol, lim, 1, seed=6, record=True)
    b = run_episode(env, pol, lim, 0, seed=5, record=True).data
    c = run_episode(env, pol, lim, 0, seed=7, record=True).data
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["action"], c["action"])
    mixed = MixedPolicy(env)
    seen = set()
    for s in range(12):
        mixed.seed(s)
        mixed.reset()
        seen.add(describe(mixed)["quality"])
    assert seen == {"expert", "medium", "random"}
    env.close()


def test_video_is_written(tmp_path):
    env = make_env("reach-v3", max_episode_steps=10)
    out = tmp_path / "eval.mp4"
    res = evaluate(make_behavior_policy("expert", env), env, [40, 41], 1, 0, video=str(out))
    env.close()
    assert out.stat().st_size > 1000 and res["video"] == str(out)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["reach-v3", "push-v3", "drawer-close-v3", "door-open-v3"])
def test_medium_success_rate_in_band(family):
    env = make_env(family)
    res = evaluate(make_behavior_policy("medium", env), env, env.tasks.select("train")[:20], 2, 3)
    env.close()
    assert 0.2 <= res["success_rate"] <= 0.7, res["success_rate"]


def test_lockstep_evaluation_runs_the_same_episodes_as_evaluate():
    """`evaluate_lockstep` (several episodes side by side, one batched policy call per step) gives
    every episode the result `evaluate` gives it: same starts, limiter, returns and distances,
    also when the episodes do not divide into the environments (10 episodes on 3 envs) and with a
    policy whose wild actions the limiter must clip."""
    from sim.evaluate import evaluate_lockstep

    W = np.random.default_rng(0).normal(size=(11, 4)) * 3.0  # a fixed linear policy, often saturating

    class Linear:
        calls = 0

        def reset(self):
            pass

        def act(self, obs):
            return np.tanh(obs["state"] @ W) * 1.5

        def act_batch(self, observations):
            Linear.calls += 1
            return np.stack([self.act(o) for o in observations])

    envs = [make_env("reach-v3", max_episode_steps=30, hand_init_noise=0.05, render=False) for _ in range(3)]
    seq = evaluate(Linear(), envs[0], [3, 41], 5, seed=7)
    Linear.calls = 0
    lock = evaluate_lockstep(Linear().act_batch, envs, [3, 41], 5, seed=7)
    for e in envs:
        e.close()
    assert Linear.calls == 4 * 30  # ceil(10 episodes / 3 envs) rounds of 30 steps
    a, b = seq["episode_results"], lock["episode_results"]
    assert [(r["task_id"], r["seed"]) for r in a] == [(r["task_id"], r["seed"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra["success"] == rb["success"] and ra["length"] == rb["length"]
        np.testing.assert_allclose([ra["return"], ra["final_distance"], ra["min_distance"]],
                                   [rb["return"], rb["final_distance"], rb["min_distance"]], rtol=1e-9)
    assert seq["limiter"] == lock["limiter"] and seq["limiter"]["clipped"] > 0
    assert len({round(r["final_distance"], 6) for r in b}) > 1  # the starts differ
    with pytest.raises(ValueError, match="2 actions for 1"):
        evaluate_lockstep(lambda obs: np.zeros((2, 4)), envs[:1], [3], 1)
