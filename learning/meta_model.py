"""MerPO meta-model (ALGORITHMS.md 2a): task heads theta_n around the meta-parameter phi.

Shared by all tasks (one latent space): encoder, decoder, GRU, posterior. Task-adapted:
the reward head and the K prior heads. Meta-training is `world_model_train.train` on a store
with several training tasks (slot 0 = phi, slot n = theta_n, loss + eta ||theta_n - phi||^2).

`adapt` fits theta_j for a new task from phi on that task's small log with the same proximal
term. The shared parts are frozen, so adaptation runs on cached posterior latents (cheap MLP
steps, no images): the prior heads learn KL(post(z_{t+1}) || prior_k(h_{t+1})) and the reward
head the reward of row t from s_{t+1}, exactly the terms of the training loss that touch theta.

eta: MerPO gives no value; it is exposed (`TrainConfig.eta`, `adapt(eta=...)`, the benchmark's
`--eta` / `--eta-sweep`). The default 1e-3 (per squared parameter; the loss is a mean over rows)
comes from a sweep on held-out push tasks (bench/world_model.py --eta-sweep, 300 adaptation
steps, 5 episodes): 0 / 1e-4 / 1e-3 / 1e-2 / 1e-1 gave 0.473 / 0.476 / 0.474 / 0.488 / 0.576
of phi's reward loss on an early (325-step) model: 1e-3 is the largest value that cost nothing,
0.1 holds theta_j too close to phi. The sweep is small and noisy (2 tasks, 3 held-out
episodes each); re-run it on real data before trusting the value.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from learning.latents import LatentCache
from learning.sampler import SequenceSampler
from learning.world_model_train import bootstrap_masks
from perception.world_model import TaskHeads, WorldModel, gaussian_kl


def task_model(model: WorldModel, slot: int = 0) -> WorldModel:
    """A single-slot copy of `model` whose heads are those of `slot` (0 = phi)."""
    cfg = dataclasses.replace(model.cfg, n_slots=1)
    out = WorldModel(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    for k, v in model.heads.state_dict().items():
        state[f"heads.{k}"] = v[slot:slot + 1].clone()
    out.load_state_dict(state)
    return out.to(next(model.parameters()).device).eval()


def head_losses(model: WorldModel, feat: torch.Tensor, z_std: torch.Tensor, reward: torch.Tensor,
                generator: torch.Generator, action: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The theta terms of the model loss on cached latent pairs feat [B, 2, F] (rows t, t+1);
    `action` [B, 2, A] (row t's action led to s_{t+1}) for heads that read it."""
    cfg = model.cfg
    Z = cfg.stoch
    slot = torch.zeros(feat.shape[0], dtype=torch.long, device=feat.device)
    nxt = feat[:, 1:2]  # s_{t+1}
    mu, std = model.prior(nxt[..., Z:], slot, None if action is None else action[:, 0:1])  # [B, 1, K, Z]
    k = torch.randint(cfg.ensemble, (feat.shape[0], 1, 1, 1), generator=generator).to(feat.device)
    k = k.expand(-1, 1, 1, Z)
    pm, ps = mu.gather(2, k)[:, :, 0], std.gather(2, k)[:, :, 0]
    kl = gaussian_kl(nxt[..., :Z], z_std[:, 1:2], pm, ps)
    r_hat = model.heads.reward(nxt, slot)[:, 0]
    return {"kl": kl.clamp(min=cfg.free_nats).mean(), "kl_raw": kl.mean(),
            "reward_nll": 0.5 * ((r_hat - reward[:, 0]) ** 2).mean()}


ADAPT_HEADS = ("all", "reward", "reward_last", "reward_offset")  # which theta_j parameters `adapt` fits


def adapt(model: WorldModel, cache: LatentCache, steps: int = 500, eta: float = 1e-3,
          lr: float = 1e-3, batch_size: int = 64, seed: int = 0, init: str = "phi",
          slot: int = 0, heads: str = "all") -> WorldModel:
    """theta_j = argmin L(theta; D_j) + eta ||theta - phi||^2, from phi (slot `slot` of
    `model`), on a new task's cached latents. init="scratch": fresh heads and no proximal
    term (the baseline). heads="reward": only the reward head adapts, the prior heads stay
    phi's (for families whose tasks share the dynamics and differ in the reward alone).
    heads="reward_last": the reward head's last layer (weights and bias) on phi's hidden layers.
    heads="reward_offset": only the reward head's output bias adapts, a per-task reward
    offset with every other parameter held at phi (eta = inf for them) [ours]: the lowest-
    variance adaptation, for logs too small or too unrepresentative to fit more (README,
    world-model benchmark: held-out push tasks, where every larger adaptation lost to phi).
    Returns a single-slot model whose heads are theta_j."""
    if init not in ("phi", "scratch"):
        raise ValueError(f"init must be phi or scratch, got {init!r}")
    if heads not in ADAPT_HEADS:
        raise ValueError(f"heads must be one of {', '.join(ADAPT_HEADS)}, got {heads!r}")
    m = task_model(model, slot)
    device = next(m.parameters()).device
    if init == "scratch":
        torch.manual_seed(seed)
        m.heads = TaskHeads(m.cfg).to(device)
        eta = 0.0
    last = len(m.heads.reward_b) - 1
    wanted = {"reward_last": {f"reward_w.{last}", f"reward_b.{last}"}, "reward_offset": {f"reward_b.{last}"}}
    chosen = [(n, p) for n, p in m.heads.named_parameters()
              if heads == "all" or (heads == "reward" and n.startswith("reward_")) or n in wanted.get(heads, ())]
    phi = [p.detach().clone() for _, p in chosen]
    for p in m.parameters():
        p.requires_grad_(False)
    params = [p for _, p in chosen]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    keys = ["feat", "z_std", "reward"] + (["action"] if m.cfg.prior_action else [])
    sampler = SequenceSampler(cache.source(), 2, batch_size, keys, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    m.train()
    for _ in range(steps):
        b = {k: torch.from_numpy(np.asarray(v, np.float32)).to(device)
             for k, v in sampler.sample().items() if k in keys}
        out = head_losses(m, b["feat"], b["z_std"], b["reward"], gen, b.get("action"))
        loss = m.cfg.reward_scale * out["reward_nll"]
        if heads == "all":
            loss = loss + m.cfg.kl_scale * out["kl"]
        if eta:
            loss = loss + eta * sum(((p - q) ** 2).sum() for p, q in zip(params, phi, strict=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


def refit_prior_heads(model: WorldModel, cache: LatentCache, steps: int = 1500, context_scale: float = 30.0,
                      bootstrap: float = 0.5, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                      random_action_gain: float | None = None) -> dict:
    """[ours] Refit the K prior heads on the cached latents of the training data, with the
    representation (encoder, GRU, posterior) frozen, and give every task slot the result.

    In joint training the heads chase a moving latent space; here they train to convergence on
    the final one: each member on its own episodes (`bootstrap`: the probability of each,
    drawn by `bootstrap_masks` as in joint training; 0 or 1: all), KL(post(z_{t+1}) || prior_k(h_{t+1}, a_t)) per member, plus the context term of
    `WorldModelConfig.prior_context_scale` with weight `context_scale` (at every sampled state a
    uniform action; the heads' trained part pulled to 0 there, so the members revert to their
    random priors off the data). One set of prior heads for all tasks: for families whose tasks
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
            ctx = phi.prior_context(feat[:, 0, Z:], feat[:, 0, :Z], slot, gen)
            loss = loss + context_scale * ctx
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        for name, p in model.heads.named_parameters():
            if name.startswith("prior_"):
                p.copy_(phi.heads.get_parameter(name)[0].to(device).expand_as(p))
    return {"kl": float(kl_mean.detach()), "context": float(ctx.detach()), "steps": steps}
