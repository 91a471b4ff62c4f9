"""MerPO on tiny latent data: transitions, the meta-step, adaptation from pi_c and Q_meta."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from learning.latents import LatentCache
from learning.merpo import MerPO, MerPOConfig, fit_normalizer, transitions
from learning.rac import RACConfig, gaussian_kl

F_DIM, A_DIM = 6, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_cache(tasks=(0, 1, 2), episodes_per_task=3, length=20, seed=0) -> LatentCache:
    rng = np.random.default_rng(seed)
    n = len(tasks) * episodes_per_task * length
    task_of_ep = np.repeat(tasks, episodes_per_task)
    action = rng.uniform(-2, 2, (n, A_DIM)).astype(np.float32)  # robot units: limits +-2
    arrays = {"feat": rng.normal(size=(n, F_DIM)).astype(np.float32),
              "z_std": np.ones((n, 3), np.float32), "action": action,
              "reward": (10 + action[:, 0] + np.repeat(task_of_ep, length)).astype(np.float32),
              "terminal": np.zeros(n, bool)}
    ends = np.arange(1, len(task_of_ep) + 1) * length
    return LatentCache(arrays, ends, task_of_ep, np.arange(len(task_of_ep)))


def small_cfg(**kw) -> MerPOConfig:
    rac = RACConfig(hidden=32, layers=2, batch_real=32, batch_model=32, cql_n_actions=2)
    return MerPOConfig(rac=rac, meta_batch=2, inner_steps=2, **kw)


def test_transitions_stay_inside_episodes_and_are_normalized():
    cache = toy_cache()
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    data = transitions(cache, norm, task=1)
    assert len(data["obs"]) == 3 * 19  # one transition fewer than rows per episode
    assert data["act"].abs().max() <= 1.0
    # next_obs of each transition is the following row's feature
    feat = cache.arrays["feat"]
    row = 3 * 20  # first row of task 1
    assert torch.allclose(data["obs"][0], torch.from_numpy(feat[row]))
    assert torch.allclose(data["next_obs"][0], torch.from_numpy(feat[row + 1]))
    np.testing.assert_allclose(norm.to_robot(data["act"][0].numpy()), cache.arrays["action"][row], atol=1e-5)
    all_data = transitions(cache, norm)
    assert abs(float(all_data["rew"].mean())) < 0.05 and abs(float(all_data["rew"].std()) - 1) < 0.05
    with pytest.raises(ValueError, match="task 7"):
        transitions(cache, norm, task=7)


def test_meta_step_pulls_the_meta_policy_towards_task_policies_and_polyaks_q():
    cache = toy_cache()
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    data = {n: transitions(cache, norm, n) for n in (0, 1, 2)}
    merpo = MerPO(F_DIM, A_DIM, [0, 1, 2], small_cfg(meta_q_polyak=0.5))

    initial = copy.deepcopy(merpo.meta_actor)
    q_before = {k: v.clone() for k, v in merpo.meta_critic.state_dict().items()}
    for _ in range(30):
        merpo.meta_step(data, None)

    def kl_to(meta) -> float:
        with torch.no_grad():
            return float(np.mean([gaussian_kl(*merpo.learners[n].actor.dist_params(data[n]["obs"]),
                                              *meta.dist_params(data[n]["obs"])).mean() for n in data]))

    assert kl_to(merpo.meta_actor) < 0.8 * kl_to(initial)  # pi_c follows the task policies
    q_after = merpo.meta_critic.state_dict()
    assert any(not torch.equal(q_before[k], q_after[k]) for k in q_before)
    # omega = 1: the meta-policy never moves
    frozen = MerPO(F_DIM, A_DIM, [0, 1, 2],
                   MerPOConfig(rac=RACConfig(hidden=32, layers=2, batch_real=32, batch_model=32,
                                             cql_n_actions=2, omega=1.0), meta_batch=2, inner_steps=2))
    before = {k: v.clone() for k, v in frozen.meta_actor.state_dict().items()}
    for _ in range(3):
        frozen.meta_step(data, None)
    assert all(torch.equal(before[k], v) for k, v in frozen.meta_actor.state_dict().items())


def test_fitted_meta_critic_evaluates_the_meta_policy():
    """meta_critic_steps > 0: Q_meta is trained as pi_c's own critic (its Bellman residual under
    pi_c's next actions falls well below the polyak Q_meta's), and a checkpoint carries it."""
    cache = toy_cache()
    cache.arrays["feat"][:, 0] = np.repeat(cache.episode_task, 20)  # the state tells the task
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    data = {n: transitions(cache, norm, n) for n in (0, 1, 2)}
    pooled = transitions(cache, norm)

    def residual(merpo, target=None) -> float:  # RAC's target: twin mix, initial temperature
        with torch.no_grad():
            a, logp = merpo.meta_actor.sample(pooled["next_obs"], torch.Generator().manual_seed(1))
            t1, t2 = (target or merpo.meta_critic)(pooled["next_obs"], a)
            y = pooled["rew"] + 0.99 * (0.75 * torch.minimum(t1, t2) + 0.25 * torch.maximum(t1, t2) - 0.1 * logp)
            return float(((merpo.meta_critic(pooled["obs"], pooled["act"])[0] - y) ** 2).mean())

    fitted = MerPO(F_DIM, A_DIM, [0, 1, 2], small_cfg(meta_critic_steps=5))
    polyak = MerPO(F_DIM, A_DIM, [0, 1, 2], small_cfg())
    before = residual(fitted)
    for _ in range(40):
        stats = fitted.meta_step(data, None)
        polyak.meta_step(data, None)
    assert "meta_bellman" in stats and fitted.meta_rac.actor is fitted.meta_actor
    after = residual(fitted, fitted.meta_rac.critic_target)  # the target it is trained towards
    assert after < 0.5 * before and after < 0.5 * residual(polyak), (before, after, residual(polyak))
    copy_ = MerPO(F_DIM, A_DIM, [0, 1, 2], small_cfg(meta_critic_steps=5, seed=4))
    copy_.load_state_dict(copy.deepcopy(fitted.state_dict()))
    assert fitted.meta_step(data, None) == copy_.meta_step(data, None)


def test_adaptation_starts_from_the_meta_policy_and_meta_critic():
    cache = toy_cache()
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    data = {n: transitions(cache, norm, n) for n in (0, 1)}
    merpo = MerPO(F_DIM, A_DIM, [0, 1], small_cfg())
    for _ in range(5):
        merpo.meta_step(data, None)
    new_task = transitions(toy_cache(tasks=(5,), seed=1), norm)
    start = merpo.adapt(new_task, None, steps=0)
    for a, b in ((start.actor, merpo.meta_actor), (start.critic, merpo.meta_critic),
                 (start.critic_target, merpo.meta_critic)):
        for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), k
    # a task learner that has not been meta-trained differs from pi_c (sanity of the check)
    trained = merpo.adapt(new_task, None, steps=20)
    assert any(not torch.equal(p, q) for p, q in zip(trained.actor.parameters(), merpo.meta_actor.parameters(),
                                                     strict=True))


def test_checkpoint_round_trip():
    cache = toy_cache()
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    data = {n: transitions(cache, norm, n) for n in (0, 1, 2)}
    a = MerPO(F_DIM, A_DIM, [0, 1, 2], small_cfg())
    for _ in range(3):
        a.meta_step(data, None)
    b = MerPO(F_DIM, A_DIM, [0, 1, 2], small_cfg(seed=9))
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as after torch.save + load: no shared tensors
    sa, sb = a.meta_step(data, None), b.meta_step(data, None)
    assert sa == sb


def test_warm_start_clones_the_pooled_behaviour_into_pi_c_and_every_task_policy():
    """warm_start_steps: pi_c learns the pooled logs' actions (its NLL drops) and every task
    learner starts from it."""
    cache = toy_cache()
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    pooled = transitions(cache, norm)
    # actions that depend on the state, so there is something to clone
    pooled["act"] = torch.tanh(pooled["obs"][:, :A_DIM])
    merpo = MerPO(F_DIM, A_DIM, [0, 1, 2], small_cfg(warm_start_steps=300))
    before = float(-merpo.meta_actor.log_prob(pooled["obs"], pooled["act"]).mean().detach())
    merpo.warm_start(pooled)
    after = float(-merpo.meta_actor.log_prob(pooled["obs"], pooled["act"]).mean().detach())
    assert after < before - 1.0, (before, after)
    for rac in merpo.learners.values():
        for p, q in zip(rac.actor.parameters(), merpo.meta_actor.parameters(), strict=True):
            assert torch.equal(p, q)


class ToyModel:
    """A stand-in for the world model's `imagine` (same contract): the latent is the last
    action, and the reward of a transition is 1 - |a - target|^2 (the task's best action)."""

    class cfg:  # noqa: N801 - mirrors WorldModel.cfg
        stoch = 2

    def __init__(self, target, known=None):
        self.target = torch.as_tensor(target, dtype=torch.float32)
        self.known = None if known is None else torch.as_tensor(known, dtype=torch.float32)

    def imagine(self, h, z, policy, horizon, slot, generator, uncertainty=None, sample=True):
        feat, feats, actions, rewards = torch.cat([z, h], -1), [], [], []
        feats.append(feat)
        for t in range(horizon):
            a = policy(feat, t)
            noise = 0.05 * torch.randn(a.shape, generator=generator)  # the ensemble's spread
            feat = torch.cat([a, h], -1)
            feats.append(feat)
            actions.append(a)
            rewards.append(1 - ((a - self.target) ** 2).sum(-1) + noise[:, 0])
        return {"feat": torch.stack(feats, 1), "action": torch.stack(actions, 1),
                "reward": torch.stack(rewards, 1), "uncertainty": self.uncertainty(torch.stack(actions, 1))}

    def uncertainty(self, actions):  # [B, H]: grows away from the actions the model was fit on
        if self.known is None:
            return torch.zeros(actions.shape[:2])
        return ((actions - self.known) ** 2).sum(-1)


def test_merpo_adp_moves_omega_towards_the_better_regularizer():
    """MerPO-Adp: a meta-policy worse than the log's actions on the new task gives omega -> 1
    (stay with the data); a better one gives omega below the base (follow pi_c); equal: base."""
    from learning.merpo import adaptive_omega
    from learning.rac import TanhGaussianActor

    cache = toy_cache(tasks=(5,), episodes_per_task=4, length=12)
    cache.arrays["feat"] = cache.arrays["feat"][:, :4]  # [z (2), h (2)] for the toy model
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    good = np.array([1.0, -0.5], np.float32)
    cache.arrays["action"][:] = good  # the log acts well: at the task's best action

    def pi_c(action):  # a meta-policy whose mean action is `action` (robot units) everywhere
        actor = TanhGaussianActor(4, A_DIM, 16, 2)
        with torch.no_grad():
            for p in actor.parameters():
                p.zero_()
            last = [m for m in actor.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.bias[:A_DIM] = torch.atanh(torch.as_tensor(norm.to_unit(np.asarray(action, np.float32))))
        return actor

    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    worse = adaptive_omega(ToyModel(good), cache, pi_c([-1.0, 1.0]), norm, 0.4, g())
    assert worse["meta_policy_return"] < worse["behaviour_return"] and worse["z"] > 2
    assert worse["omega"] == 1.0 and worse["horizon"] == 11 and worse["rollouts"] == 4 * 8
    # the log's actions are now the poor ones, pi_c acts at the optimum
    better = adaptive_omega(ToyModel([-1.0, 1.0]), cache, pi_c([-1.0, 1.0]), norm, 0.4, g())
    assert better["z"] < -2 and better["omega"] == 0.0
    same = adaptive_omega(ToyModel(good), cache, pi_c(good), norm, 0.4, g())
    # the same random draws for both: equal policies differ by nothing, omega stays MerPO's
    assert same["z"] == pytest.approx(0.0, abs=1e-3) and same["omega"] == pytest.approx(0.4, abs=1e-3)
    assert same["meta_policy_return"] == pytest.approx(same["behaviour_return"], abs=1e-4)
    # pi_c looks better in the model only where the model is unsure (far from the logged
    # actions): the pessimistic returns (MOPO/LOMPO) keep omega with the data, raw ones do not
    risky = ToyModel([-1.0, 1.0], known=good)
    naive = adaptive_omega(risky, cache, pi_c([-1.0, 1.0]), norm, 0.4, g(), uncertainty_penalty=0.0)
    assert naive["meta_policy_return"] > naive["behaviour_return"] and naive["omega"] == 0.0
    careful = adaptive_omega(risky, cache, pi_c([-1.0, 1.0]), norm, 0.4, g())
    assert careful["meta_policy_return"] == pytest.approx(naive["meta_policy_return"])
    assert careful["meta_policy_uncertainty"] > careful["behaviour_uncertainty"] == 0.0
    assert careful["meta_policy_pessimistic_return"] < careful["behaviour_pessimistic_return"]
    assert careful["omega"] == 1.0


def test_meta_training_with_dual_ascended_lambda_fits_each_tasks_pi_beta_once():
    cache = toy_cache()
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    data = {n: transitions(cache, norm, n) for n in (0, 1, 2)}
    cfg = small_cfg()
    cfg.rac.lam_target, cfg.rac.lam_lr, cfg.rac.behaviour_fit_steps = 1e-6, 0.05, 20
    merpo = MerPO(F_DIM, A_DIM, [0, 1, 2], cfg)
    initial = copy.deepcopy(merpo.meta_actor)
    for _ in range(6):
        stats = merpo.meta_step(data, None)
    stepped = [n for n in (0, 1, 2) if merpo.learners[n].steps]
    assert stepped and all(merpo.learners[n].behaviour_actor is not None for n in stepped)
    pi_beta = copy.deepcopy(merpo.learners[stepped[0]].behaviour_actor.state_dict())
    merpo.meta_step(data, None)
    assert all(torch.equal(v, merpo.learners[stepped[0]].behaviour_actor.state_dict()[k]) for k, v in pi_beta.items())
    assert all(merpo.learners[n].lam > cfg.rac.lam for n in stepped)  # the divergence exceeds 1e-6
    assert "lam" in stats
    assert any(not torch.equal(initial.state_dict()[k], v) for k, v in merpo.meta_actor.state_dict().items())
    merpo2 = MerPO(F_DIM, A_DIM, [0, 1, 2], cfg)  # a checkpoint carries pi_beta and lambda
    merpo2.load_state_dict(copy.deepcopy(merpo.state_dict()))
    assert merpo2.learners[stepped[0]].lam == merpo.learners[stepped[0]].lam
    assert merpo2.learners[stepped[0]].behaviour_actor is not None


def test_a_terminal_last_row_is_a_transition_with_done():
    cache = toy_cache()
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    last = int(cache.episode_ends[3]) - 1  # task 1's first episode ends in a true termination
    cache.arrays["terminal"][last] = True
    data = transitions(cache, norm, task=1)
    assert len(data["obs"]) == 3 * 19 + 1
    done = data["done"].numpy().astype(bool)
    assert done.sum() == 1
    i = int(np.flatnonzero(done)[0])
    assert torch.allclose(data["obs"][i], torch.from_numpy(cache.arrays["feat"][last]))
    assert torch.allclose(data["rew"][i], torch.tensor((cache.arrays["reward"][last] - norm.reward_mean) / norm.reward_std))
    assert not torch.allclose(data["next_obs"][i], torch.from_numpy(cache.arrays["feat"][last + 1]))  # never the next episode


@pytest.mark.parametrize("lam_target", [0.0, 0.5])
def test_batched_meta_steps_equal_the_per_task_loop(lam_target):
    """The default batched inner loop gives the per-task loop's learners, pi_c and statistics
    (with model rollouts refreshed at each learner's own step count)."""
    cache = toy_cache()
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    data = {n: transitions(cache, norm, n) for n in (0, 1, 2)}

    def rollout_fn(slot):
        W = torch.linspace(-0.3, 0.3, F_DIM * F_DIM).reshape(F_DIM, F_DIM) * (slot + 1)
        U = torch.ones(A_DIM, F_DIM) * 0.1

        def fn(start, policy):
            a = policy(start)
            nxt = torch.tanh(start @ W + a @ U)
            return {"feat": torch.stack([start, nxt], 1), "action": a[:, None], "reward": nxt[:, :1],
                    "uncertainty": nxt[:, :1].abs()}
        return fn

    fns = {n: rollout_fn(n) for n in (0, 1, 2)}
    cfg = small_cfg()
    cfg.inner_steps = 3
    cfg.rac.rollout_batch, cfg.rac.rollout_every, cfg.rac.lam_target = 8, 2, lam_target
    cfg.rac.behaviour_fit_steps = 5
    loop = MerPO(F_DIM, A_DIM, [0, 1, 2], cfg, batched=False)
    fast = MerPO(F_DIM, A_DIM, [0, 1, 2], cfg)
    for _ in range(4):
        s_loop, s_fast = loop.meta_step(data, fns), fast.meta_step(data, fns)
        assert s_loop.keys() == s_fast.keys()
        for k in s_loop:
            assert s_fast[k] == pytest.approx(s_loop[k], rel=1e-4, abs=1e-5), k
    for n in (0, 1, 2):
        a, b = loop.learners[n], fast.learners[n]
        assert a.steps == b.steps and len(a.model_buffer) == len(b.model_buffer)
        for p, q in zip([*a.actor.parameters(), *a.critic.parameters()],
                        [*b.actor.parameters(), *b.critic.parameters()], strict=True):
            assert torch.allclose(p, q, atol=1e-5)
    for p, q in zip(loop.meta_actor.parameters(), fast.meta_actor.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


@pytest.mark.parametrize("start", ["meta", "scratch"])
def test_adapting_to_several_logs_at_once_equals_one_by_one(start):
    """adapt_racs (the learning benchmark's batched adaptation over units) gives each log the
    learner adapt_rac would give it alone, from pi_c / Q_meta or from scratch."""
    from learning.merpo import adapt_rac, adapt_racs

    cache = toy_cache(tasks=(5, 6, 7), seed=2)
    norm = fit_normalizer(cache, [-2, -2], [2, 2])
    logs = [transitions(cache, norm, n) for n in (5, 6, 7)]
    cfg = small_cfg().rac
    merpo = MerPO(F_DIM, A_DIM, [0], small_cfg())
    actor, critic = (merpo.meta_actor, merpo.meta_critic) if start == "meta" else (None, None)
    together = adapt_racs(actor, critic, logs, None, cfg, 15, seeds=[11, 12, 13])
    for log, seed, rac in zip(logs, (11, 12, 13), together, strict=True):
        alone = adapt_rac(actor, critic, log, None, cfg, 15, seed=seed)
        for p, q in zip(rac.actor.parameters(), alone.actor.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
        assert rac.steps == alone.steps == 15
    # the learners differ from each other (each its own log and seed)
    assert not torch.equal(next(together[0].actor.parameters()), next(together[1].actor.parameters()))
    with pytest.raises(ValueError, match="3 logs, 2 seeds"):
        adapt_racs(actor, critic, logs, None, cfg, 1, seeds=[1, 2])
