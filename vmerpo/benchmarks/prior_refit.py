"""The prior-heads refit of the world-model benchmark [ours; experimental, off by default].

After joint training, the K prior heads are refit on cached latents of the training episodes
with the representation (encoder, GRU, posterior) frozen, and every task slot gets the result.
A benchmark option (`vmerpo bench world-model --refit-heads STEPS --refit-context W
--refit-action-gain G`); the models `vmerpo train` writes are never refit. Why it exists and
how its settings were chosen: docs/algorithms.md#experimental-options.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from learning.latents import LatentCache
from learning.meta_model import task_model
from learning.sampler import SequenceSampler
from learning.world_model_train import bootstrap_masks
from perception.world_model import WorldModel, gaussian_kl


def prior_context(model: WorldModel, h: torch.Tensor, z: torch.Tensor, slot: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Function-space anchoring at context points (Rudner et al. 2023): at states (h, z) [N, .]
    a uniform action each, the mean square of the heads' trained part of every member's mean
    there (without the random prior functions, to which the members should revert off the
    data). Trains the heads only: the shared GRU is not touched."""
    lo, hi = model.action_low, model.action_high
    a = lo + (hi - lo) * torch.rand((h.shape[0], lo.shape[0]), generator=generator).to(h.device)
    with torch.no_grad():
        h_ctx = model.transition(h.detach(), z.detach(), a)
    mu_trained, _ = model.heads.prior(torch.cat([h_ctx, model.action_in(a).to(h_ctx.dtype)], -1), slot)
    return mu_trained.pow(2).mean()


def refit_prior_heads(model: WorldModel, cache: LatentCache, steps: int = 1500, context_scale: float = 30.0,
                      bootstrap: float = 0.5, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                      random_action_gain: float | None = None) -> dict:
    """Refit the K prior heads on the cached latents of the training data, with the
    representation (encoder, GRU, posterior) frozen, and give every task slot the result.

    In joint training the heads chase a moving latent space; here they train to convergence on
    the final one: each member on its own episodes (`bootstrap`: the probability of each,
    drawn by `bootstrap_masks` as in joint training; 0 or 1: all), KL(post(z_{t+1}) ||
    prior_k(h_{t+1}, a_t)) per member, plus `prior_context` with weight `context_scale` (at every
    sampled state a uniform action; the heads' trained part pulled to 0 there, so the members
    revert to their random priors off the data). One set of prior heads for all tasks: for families whose tasks
    share the dynamics and differ in the reward (Meta-World reach/push: the goal); the reward
    heads are untouched. Needs the random priors and action-reading heads.
    `random_action_gain`: if given, first set the model's `prior_random_action_gain` (how
    strongly the random prior functions read the action; the heads are refit to the new priors).
    In place; returns the final losses."""
    if not (model.cfg.prior_action and model.cfg.prior_random_scale):
        raise ValueError("refit_prior_heads needs a model with prior_action and prior_random_scale (the bench preset)")
    if random_action_gain is not None:  # validated by the config
        model.cfg = dataclasses.replace(model.cfg, prior_random_action_gain=float(random_action_gain))
    cfg = model.cfg
    Z, K = cfg.stoch, cfg.ensemble
    # pairs (t, t+1) inside episodes, and each member's episodes as in joint training
    sampler = SequenceSampler(cache.source(), 2, batch_size, ["feat", "z_std", "action"], seed=seed)
    masks = bootstrap_masks(len(cache.episode_ends), K, bootstrap if bootstrap < 1 else 0.0, seed)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    phi = task_model(model, 0).cpu()
    for p in phi.parameters():
        p.requires_grad_(False)
    params = [p for n, p in phi.heads.named_parameters() if n.startswith("prior_")]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    slot = torch.zeros(batch_size, dtype=torch.long)
    kl_mean = ctx = torch.zeros(())
    for _ in range(steps):
        batch = sampler.sample()
        feat, z_std, act = (torch.from_numpy(np.asarray(batch[k], np.float32)) for k in ("feat", "z_std", "action"))
        mu, std = phi.prior(feat[:, 1, Z:], slot, act[:, 0])  # [B, K, Z]: s_{t+1} from a_t
        kl = gaussian_kl(feat[:, 1, None, :Z], z_std[:, 1, None], mu, std).clamp(min=cfg.free_nats)
        if masks is None:
            kl_mean = kl.mean()
        else:  # as WorldModel.losses: an episode no member drew contributes nothing
            w = torch.from_numpy(masks[np.searchsorted(cache.episode_ends, batch["start"], side="right")]).float()
            kl_mean = ((kl * w).sum(1) / w.sum(1).clamp(min=1.0)).mean()
        loss = cfg.kl_scale * kl_mean
        if context_scale:
            ctx = prior_context(phi, feat[:, 0, Z:], feat[:, 0, :Z], slot, gen)
            loss = loss + context_scale * ctx
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        for name, p in model.heads.named_parameters():
            if name.startswith("prior_"):
                p.copy_(phi.heads.get_parameter(name)[0].to(device).expand_as(p))
    return {"kl": float(kl_mean.detach()), "context": float(ctx.detach()), "steps": steps}
