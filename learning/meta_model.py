"""MerPO meta-model (docs/algorithms.md): task heads theta_n around the meta-parameter phi.

Shared by all tasks (one latent space): encoder, decoder, GRU, posterior. Task-adapted:
the reward head and the K prior heads. Meta-training is `world_model_train.train` on a store
with several training tasks (slot 0 = phi, slot n = theta_n, loss + eta ||theta_n - phi||^2).

`adapt` fits theta_j for a new task from phi on that task's small log with the same proximal
term. The shared parts are frozen, so adaptation runs on cached posterior latents (cheap MLP
steps, no images): the prior heads learn KL(post(z_{t+1}) || prior_k(h_{t+1})) and the reward
head the reward of row t from s_{t+1}, exactly the terms of the training loss that touch theta.

eta: MerPO gives no value; it is exposed (`TrainConfig.eta`, `adapt(eta=...)`, the benchmark's
`--eta` / `--eta-sweep`). The default 1e-3 (per squared parameter; the loss is a mean over rows)
comes from a sweep on held-out push tasks (vmerpo bench world-model --eta-sweep, 300 adaptation
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
    variance adaptation, for logs too small or too unrepresentative to fit more (experiments/06-adaptation-scope: held-out push tasks, where every larger adaptation lost to phi).
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
