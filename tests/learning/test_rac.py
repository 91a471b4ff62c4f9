"""RAC on tiny latent data: the conservative penalty, the two regularizers, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch

from learning.rac import RAC, RACConfig, TanhGaussianActor

OBS, ACT = 6, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_data(n: int = 512, seed: int = 0, noise: float = 0.0):
    """Expert data: a = tanh(W s) (+ noise); reward is highest at the expert action."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(ACT, OBS, generator=g) * 0.5
    obs = torch.randn(n, OBS, generator=g)
    act = torch.tanh(obs @ W.T) + noise * torch.randn(n, ACT, generator=g)
    act = act.clamp(-0.95, 0.95)
    rew = -((act - torch.tanh(obs @ W.T)) ** 2).sum(-1)
    next_obs = 0.9 * obs + 0.1 * torch.randn(n, OBS, generator=g)
    return {"obs": obs, "act": act, "rew": rew, "next_obs": next_obs, "done": torch.zeros(n)}, W


def toy_rollout(W):
    def rollout(start, policy):
        a = policy(start)
        nxt = 0.9 * start
        r = -((a - torch.tanh(start @ W.T)) ** 2).sum(-1)
        return {"feat": torch.stack([start, nxt], 1), "action": a[:, None], "reward": r[:, None],
                "uncertainty": torch.zeros(len(start), 1)}
    return rollout


def small(**kw) -> RACConfig:
    base = dict(hidden=32, layers=2, batch_real=64, batch_model=64, cql_n_actions=4, model_buffer=2000)
    base.update(kw)
    return RACConfig(**base)


def batch(data, n, g):
    idx = torch.randint(len(data["obs"]), (n,), generator=g)
    return {k: v[idx] for k, v in data.items()}


def train(rac: RAC, data, W, steps: int, meta_actor=None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        if i % 10 == 0:
            rac.refresh_rollouts(batch(data, 64, g)["obs"], toy_rollout(W))
        rac.update(batch(data, 64, g), meta_actor)
    return rac


def q_gap(rac: RAC, data) -> float:
    """mean Q(s_real, a_data) - mean Q(s_model, a_uniform): data actions vs model-side actions."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        q_data = torch.minimum(*rac.critic(data["obs"], data["act"])).mean()
        uni = torch.rand(data["act"].shape, generator=g) * 2 - 1
        q_model = torch.minimum(*rac.critic(0.9 * data["obs"], uni)).mean()
    return float(q_data - q_model)


@pytest.mark.parametrize("cql_states", [0, 32])  # 0: every model state (COMBO); 32: half (CPU preset)
def test_conservative_penalty_pushes_q_down_on_model_actions(cql_states):
    data, W = toy_data()
    # rewards say nothing about actions (all zero): only the penalty separates them
    flat = dict(data, rew=torch.zeros_like(data["rew"]))
    plain = train(RAC(OBS, ACT, small(cql_beta=0.0, lam=0.0), seed=0), flat, W, 300)
    conservative = train(RAC(OBS, ACT, small(cql_beta=5.0, lam=0.0, cql_target=-10.0, cql_states=cql_states),
                             seed=0), flat, W, 300)
    assert q_gap(conservative, data) > q_gap(plain, data) + 0.4, (q_gap(conservative, data), q_gap(plain, data))


def test_omega_one_removes_the_meta_policy_gradient():
    data, W = toy_data()
    g = torch.Generator().manual_seed(0)
    real = batch(data, 64, g)
    meta_a = TanhGaussianActor(OBS, ACT, 32, 2)
    meta_b = TanhGaussianActor(OBS, ACT, 32, 2)  # a different meta-policy
    results = []
    for meta in (meta_a, meta_b, None):
        rac = RAC(OBS, ACT, small(omega=1.0), seed=3)
        stats = rac.update(real, meta)
        results.append((copy.deepcopy(rac.actor.state_dict()), stats["meta_kl"]))
    for (sd, kl) in results:
        assert kl == 0.0
        for k in sd:
            assert torch.equal(sd[k], results[0][0][k]), k
    # with omega < 1 the meta-policy changes the update
    a = RAC(OBS, ACT, small(omega=0.4), seed=3)
    a.update(real, meta_a)
    b = RAC(OBS, ACT, small(omega=0.4), seed=3)
    b.update(real, meta_b)
    assert any(not torch.equal(a.actor.state_dict()[k], b.actor.state_dict()[k]) for k in a.actor.state_dict())


def test_behaviour_regularizer_keeps_policy_near_expert_actions():
    data, W = toy_data()
    # a misleading reward that prefers a corner action, so Q alone pulls away from the data
    lure = dict(data, rew=data["act"].sum(-1) * 0 + 1.0 * (-(data["act"] - 0.9) ** 2).sum(-1))

    def lure_rollout(start, policy):
        a = policy(start)
        return {"feat": torch.stack([start, 0.9 * start], 1), "action": a[:, None],
                "reward": (-(a - 0.9) ** 2).sum(-1)[:, None], "uncertainty": torch.zeros(len(start), 1)}

    def fit(lam: float) -> float:
        rac = RAC(OBS, ACT, small(omega=1.0, lam=lam, cql_beta=0.0), seed=0)
        g = torch.Generator().manual_seed(0)
        for i in range(200):
            if i % 10 == 0:
                rac.refresh_rollouts(batch(lure, 64, g)["obs"], lure_rollout)
            rac.update(batch(lure, 64, g))
        with torch.no_grad():
            return float((rac.actor.mean_unit(data["obs"]) - data["act"]).abs().mean())

    regularized, free = fit(50.0), fit(0.0)
    assert regularized < 0.15, regularized
    assert free > regularized + 0.1, (free, regularized)


def test_state_dict_round_trip_continues_identically():
    data, W = toy_data()
    a = train(RAC(OBS, ACT, small(), seed=0), data, W, 20)
    b = RAC(OBS, ACT, small(), seed=99)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as after torch.save + load: no shared tensors
    b.model_buffer.data = {k: v.clone() for k, v in a.model_buffer.data.items()}
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sa = a.update(batch(data, 64, g1))
    sb = b.update(batch(data, 64, g2))
    assert sa == sb
