"""The prior-heads refit of the world-model benchmark (an experimental option): one set of prior
heads for every slot, the context term that makes members revert to their random priors off
the data, and the retired joint-training form of that term."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from learning.latents import LatentCache
from perception.world_model import WorldModel, WorldModelConfig, config_from_dict
from vmerpo.benchmarks.prior_refit import prior_context, refit_prior_heads


def _random_cache(cfg, episodes=4, length=10, seed=0) -> LatentCache:
    rng = np.random.default_rng(seed)
    T = episodes * length
    arrays = {"feat": rng.normal(size=(T, cfg.stoch + cfg.deter)).astype(np.float32),
              "z_std": np.full((T, cfg.stoch), 0.5, np.float32),
              "action": rng.uniform(-0.2, 0.2, (T, cfg.action_dim)).astype(np.float32),  # a narrow cloud
              "reward": rng.normal(size=T).astype(np.float32), "terminal": np.zeros(T, np.float32)}
    ends = np.arange(1, episodes + 1) * length
    return LatentCache(arrays, ends, np.zeros(episodes, np.int64), np.arange(episodes))



def test_refit_prior_heads_gives_every_slot_one_set_and_reverts_to_the_random_priors_off_the_data():
    cfg = WorldModelConfig(image_size=32, input_size=32, cnn_depth=4, deter=16, stoch=6, hidden=16,
                           reward_hidden=16, ensemble=3, action_dim=2, n_slots=3)
    with pytest.raises(ValueError, match="prior_action and prior_random_scale"):
        refit_prior_heads(WorldModel(cfg), _random_cache(cfg), steps=1)
    cfg = dataclasses.replace(cfg, prior_action=True, prior_random_scale=3.0)
    cache = _random_cache(cfg)
    trained_part = {}
    for scale in (0.0, 100.0):
        torch.manual_seed(0)
        m = WorldModel(cfg)
        with torch.no_grad():  # task slots that differ before the refit
            m.heads.prior_b1[1] += 1.0
        reward_before = [p.clone() for p in m.heads.reward_w]
        out = refit_prior_heads(m, cache, steps=60, context_scale=scale, batch_size=32)
        assert out["steps"] == 60 and np.isfinite(out["kl"])
        for name, p in m.heads.named_parameters():
            if name.startswith("prior_"):
                assert torch.equal(p[1], p[0]) and torch.equal(p[2], p[0]), name
        assert all(torch.equal(a, b) for a, b in zip(reward_before, m.heads.reward_w, strict=True))
        with torch.no_grad():  # the heads' trained part at uniform actions (no random prior)
            f = torch.from_numpy(cache.arrays["feat"])
            u = torch.rand(len(f), 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
            h = m.transition(f[:, 6:], f[:, :6], u)
            mu, _ = m.heads.prior(torch.cat([h, m.action_in(u)], -1), torch.zeros(len(f), dtype=torch.long))
            trained_part[scale] = float(mu.pow(2).mean())
    assert trained_part[100.0] < 0.5 * trained_part[0.0], trained_part
    # the random priors' action gain: set on the model (validated), the heads refit to those priors
    m = WorldModel(cfg)
    with pytest.raises(ValueError, match="prior_random_action_gain"):
        refit_prior_heads(m, cache, steps=1, random_action_gain=0.0)
    refit_prior_heads(m, cache, steps=2, random_action_gain=2.0, batch_size=32)
    assert m.cfg.prior_random_action_gain == 2.0


def test_prior_context_trains_only_the_prior_heads():
    cfg = WorldModelConfig(image_size=32, input_size=32, cnn_depth=4, deter=16, stoch=6, hidden=16,
                           reward_hidden=16, ensemble=3, action_dim=2, prior_action=True, prior_random_scale=3.0)
    torch.manual_seed(0)
    m = WorldModel(cfg)
    h, z = torch.randn(32, 16), torch.randn(32, 6)
    ctx = prior_context(m, h, z, torch.zeros(32, dtype=torch.long), torch.Generator().manual_seed(0))
    assert ctx.ndim == 0 and float(ctx.detach()) > 0
    ctx.backward()
    assert m.heads.prior_w1.grad is not None and float(m.heads.prior_w1.grad.abs().sum()) > 0
    assert all(p.grad is None for p in m.gru.parameters())  # the shared GRU is not trained by it
    assert all(p.grad is None for p in m.heads.reward_w)


def test_retired_joint_training_context_option_loads_only_when_off():
    base = dict(image_size=32, input_size=32, cnn_depth=4, deter=16, stoch=6, hidden=16, reward_hidden=16,
                ensemble=3, action_dim=2)
    assert config_from_dict({**base, "prior_context_scale": 0.0}) == WorldModelConfig(**base)
    with pytest.raises(ValueError, match="prior_context_scale"):
        config_from_dict({**base, "prior_context_scale": 10.0})
