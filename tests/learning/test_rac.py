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


def _critic_after_one_step(cfg: RACConfig, model_reward: float):
    """Critic weights after one step on a fixed real batch and a model buffer whose rewards
    are all `model_reward` (nothing else differs)."""
    data, W = toy_data()
    g = torch.Generator().manual_seed(0)
    rac = RAC(OBS, ACT, cfg, seed=0)
    m = batch(data, cfg.batch_model, g)
    rac.model_buffer.add(dict(m, rew=torch.full_like(m["rew"], model_reward)))
    rac.critic_step(batch(data, cfg.batch_real, torch.Generator().manual_seed(1)))
    return rac.critic.state_dict()


@pytest.mark.parametrize("batch_model", [64, 32])  # equal batches and unequal ones
def test_real_ratio_weights_real_and_model_rows_in_the_bellman_loss(batch_model):
    def differs(real_ratio: float) -> bool:
        cfg = small(cql_beta=0.0, real_ratio=real_ratio, batch_model=batch_model)
        a, b = _critic_after_one_step(cfg, 0.0), _critic_after_one_step(cfg, 5.0)
        return any(not torch.equal(a[k], b[k]) for k in a)

    assert not differs(1.0)  # f = 1: the model rows' rewards do not reach the critic
    assert differs(0.5)


def test_lambda_by_dual_ascent_follows_its_divergence_target():
    data, W = toy_data(noise=0.3)
    pi_beta = TanhGaussianActor(OBS, ACT, 32, 2)
    from learning.merpo import train_bc

    train_bc(pi_beta, data, 200, 64, 1e-3)

    def lam_after(target: float) -> tuple[float, dict]:
        rac = RAC(OBS, ACT, small(omega=1.0, lam=5.0, lam_target=target, lam_lr=0.05), seed=0)
        rac.set_behaviour_policy(pi_beta)
        stats = train(rac, data, W, 40).update(batch(data, 64, torch.Generator().manual_seed(2)))
        return rac.lam, stats

    low, stats = lam_after(1e-6)  # any divergence exceeds it: lambda grows
    high, _ = lam_after(1e3)  # no policy is that far: lambda shrinks
    assert low > 5.0 > high, (low, high)
    assert stats["lam"] > 5.0 and stats["behaviour_kl"] >= 0.0
    # without pi_beta it says what to do
    rac = RAC(OBS, ACT, small(lam_target=1.0), seed=0)
    with pytest.raises(RuntimeError, match="set_behaviour_policy"):
        rac.update(batch(data, 64, torch.Generator().manual_seed(0)))


def test_dual_ascended_lambda_and_pi_beta_survive_a_checkpoint():
    from learning.merpo import adapt_rac

    data, W = toy_data(noise=0.3)
    cfg = small(omega=1.0, lam_target=0.5, lam_lr=0.05, behaviour_fit_steps=50)
    a = adapt_rac(None, None, data, toy_rollout(W), cfg, 20, seed=0)  # fits pi_beta itself
    assert a.behaviour_actor is not None and a.lam != cfg.lam
    b = RAC(OBS, ACT, cfg, seed=99)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    b.model_buffer.data = {k: v.clone() for k, v in a.model_buffer.data.items()}
    assert b.lam == a.lam
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert a.update(batch(data, 64, g1)) == b.update(batch(data, 64, g2))
