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
