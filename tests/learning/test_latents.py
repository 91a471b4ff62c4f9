"""Cached latents, latent rollouts and meta-model adaptation on a tiny trained model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from learning.latents import LatentCache, encode_store, filter_episodes, replay_actions, rollout
from learning.meta_model import adapt, head_losses, task_model
from learning.sampler import SequenceSampler
from learning.store import EpisodeStore
from learning.world_model_train import load_world_model, preset, train
from tests.learning.test_world_model_train import make_store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("lat")
    store = make_store(d / "s.zarr", episodes=6, length=25)
    train(str(store), dataclasses.replace(preset("tiny"), steps=10), d / "run", progress=False)
    model, meta = load_world_model(d / "run")
    return EpisodeStore.open(store), model, meta


def test_cache_matches_the_step_filter_and_round_trips(trained, tmp_path):
    store, model, _ = trained
    cache = encode_store(model, store, episodes=[1, 4], batch_episodes=1)
    assert cache.arrays["feat"].shape == (50, model.cfg.feat_dim)
    assert list(cache.episode_ends) == [25, 50] and list(cache.episode_task) == [1, 0]
    # Batched + padded filtering equals the one-frame deployment step, episode by episode.
    ep = store.episode(4)
    h, z = model.initial(1)
    prev = torch.zeros(1, 4)
    with torch.no_grad():
        for t in range(25):
            h, z = model.step(torch.from_numpy(ep["image"][t:t + 1]), prev, h, z)
            prev = torch.from_numpy(ep["action"][t:t + 1])
    np.testing.assert_allclose(cache.arrays["feat"][49], torch.cat([z, h], -1)[0].numpy(), atol=1e-5)
    long_short = filter_episodes(model, [ep["image"], ep["image"][:7]], [ep["action"], ep["action"][:7]])
    np.testing.assert_allclose(long_short[1]["h"], long_short[0]["h"][:7], atol=1e-6)
    np.testing.assert_array_equal(cache.arrays["reward"][25:], ep["reward"])
    cache.save(tmp_path / "c.npz")
    back = LatentCache.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.arrays["feat"], cache.arrays["feat"])
    batch = SequenceSampler(back.source(), 4, 3, ["feat", "action"]).sample()
    assert batch["feat"].shape == (3, 4, model.cfg.feat_dim)


def test_rollout_from_cached_states(trained):
    store, model, meta = trained
    cache = encode_store(model, store, episodes=[0])
    feat = torch.from_numpy(cache.arrays["feat"][:6])
    acts = torch.from_numpy(cache.arrays["action"][:6]).unsqueeze(1).repeat(1, 3, 1)
    out = rollout(model, feat, replay_actions(acts), 3, torch.Generator().manual_seed(0), slot=1)
    assert out["feat"].shape == (6, 4, model.cfg.feat_dim)
    torch.testing.assert_close(out["feat"][:, 0], feat)
    assert out["reward"].shape == out["uncertainty"].shape == (6, 3)
    assert torch.isfinite(out["uncertainty"]).all() and (out["uncertainty"] >= 0).all()
    for kind in ("max_var", "mean_dis"):
        u = rollout(model, feat, replay_actions(acts), 3, torch.Generator().manual_seed(0), 1, kind)
        assert (u["uncertainty"] > 0).all()


def test_adapt_moves_heads_from_phi_and_lowers_their_loss(trained):
    store, model, _ = trained
    cache = encode_store(model, store, episodes=[0, 2, 4])
    phi = task_model(model, 0)
    adapted = adapt(model, cache, steps=60, eta=1e-3, lr=3e-3, batch_size=16, seed=0)
    assert adapted.cfg.n_slots == 1
    # shared parts untouched
    for (k, a), b in zip(phi.state_dict().items(), adapted.state_dict().values(), strict=True):
        if not k.startswith("heads."):
            assert torch.equal(a, b), k
    s = SequenceSampler(cache.source(), 2, 64, ["feat", "z_std", "reward"], seed=5).sample()
    b = {k: torch.from_numpy(s[k]) for k in ("feat", "z_std", "reward")}
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        before, after = head_losses(phi, **b, generator=g()), head_losses(adapted, **b, generator=g())
    assert float(after["reward_nll"]) < float(before["reward_nll"])
    scratch = adapt(model, cache, steps=5, init="scratch", seed=0)
    assert not torch.equal(scratch.heads.prior_w1, phi.heads.prior_w1)


def test_reward_only_adaptation_keeps_phis_prior_heads(tiny_synthetic_model):
    store, model = tiny_synthetic_model(episodes=2, length=12)
    cache = encode_store(model, EpisodeStore.open(store))
    m = adapt(model, cache, steps=5, heads="reward")
    assert torch.equal(m.heads.prior_w1, model.heads.prior_w1[:1])
    assert not torch.equal(m.heads.reward_w[0], model.heads.reward_w[0][:1])
    with pytest.raises(ValueError, match="heads"):
        adapt(model, cache, steps=1, heads="prior")


def test_reward_offset_adaptation_moves_only_the_reward_bias_and_fits_a_shifted_reward(tiny_synthetic_model):
    """heads="reward_offset": theta_j differs from phi in the reward head's output bias alone,
    and that bias moves by the shift of a task whose rewards are phi's predictions + c."""
    store, model = tiny_synthetic_model(episodes=2, length=12)
    cache = encode_store(model, EpisodeStore.open(store))
    phi = task_model(model, 0)
    with torch.no_grad():  # the task: phi's own reward prediction of each row, shifted by 0.7
        feat = torch.from_numpy(cache.arrays["feat"]).float()
        pred = phi.heads.reward(feat[:, None], torch.zeros(len(feat), dtype=torch.long))[:, 0].numpy()
    r = cache.arrays["reward"]
    ends = np.asarray(cache.episode_ends)
    starts = np.concatenate([[0], ends[:-1]])
    for s, e in zip(starts, ends, strict=True):  # row t's reward is predicted from s_{t+1}
        r[s:e - 1] = pred[s + 1:e] + 0.7
    m = adapt(model, cache, steps=300, heads="reward_offset", eta=0.0, lr=1e-2)
    last = len(m.heads.reward_b) - 1
    for n, p in m.heads.named_parameters():
        if n != f"reward_b.{last}":
            assert torch.equal(p, phi.heads.get_parameter(n)), n
    shift = float((m.heads.reward_b[last][0, 0] - phi.heads.reward_b[last][0, 0]).detach())
    assert abs(shift - 0.7) < 0.1, shift


@pytest.mark.parametrize("heads,moved", [("reward", {"reward_w.0", "reward_b.0", "reward_w.1", "reward_b.1",
                                                     "reward_w.2", "reward_b.2"}),
                                         ("reward_last", {"reward_w.2", "reward_b.2"}),
                                         ("reward_offset", {"reward_b.2"})])
def test_each_adaptation_scope_moves_exactly_its_parameters(tiny_synthetic_model, heads, moved):
    store, model = tiny_synthetic_model(episodes=2, length=12)
    cache = encode_store(model, EpisodeStore.open(store))
    phi = task_model(model, 0)
    assert len(phi.heads.reward_w) == 3  # the tiny preset's reward MLP: two hidden layers
    m = adapt(model, cache, steps=5, heads=heads, eta=0.0, lr=1e-2)
    changed = {n for n, p in m.heads.named_parameters() if not torch.equal(p, phi.heads.get_parameter(n))}
    assert changed == moved
