"""The learning benchmark's methods on one shared world model, latents and data.

Every method ends the same way: a tanh-Gaussian actor on the latent features s = [z, h] of the
shared world model, deployed through the same graph (`DeployedPolicy`) with the task-adapted
heads theta_j. They differ in how the actor is trained:

    merpo   meta-training (pi_c, Q_meta over per-task RAC learners), then RAC on D_j from
            pi_c / Q_meta, regularized towards pi_c (omega = 0.4)                 [MerPO]
    merpo_adp  the same with omega chosen per task (`learning.merpo.adaptive_omega`) [MerPO-Adp]
    rac     single-task RAC with omega = 1 (COMBO-like: conservative critic + behaviour
            prior, no meta-policy): pretrained on the pooled meta-train logs, then RAC on D_j
    lompo   uncertainty-penalized latent actor-critic (r - 5 u, 5-step rollouts with N(0, 0.2)
            action noise, 50/50 real/imagined, no conservative term, no behaviour prior):
            pretrained on the pooled logs, then on D_j                              [LOMPO]
    bc      behaviour cloning (max log-likelihood of the logged actions): pretrained on the
            pooled meta-train logs, fine-tuned on D_j

Pretraining on the pooled meta-train logs gives the baselines the same data MerPO sees; the
pooled learners use phi's heads (slot 0) for model rollouts, adaptation uses theta_j.
LOMPO's deterministic TD3 actor is replaced by the shared tanh-Gaussian actor so every method
deploys through one graph [ours].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from learning.merpo import adapt_rac, train_bc
from learning.rac import RACConfig, TanhGaussianActor, TwinCritic

METHODS = ("merpo", "merpo_adp", "meta_policy", "rac", "lompo", "bc")
# start from the meta-trained pi_c and Q_meta, not pretrained (meta_policy: MerPO v2's pi_c at the
# task's inferred embedding, no RAC step)
META_METHODS = ("merpo", "merpo_adp", "meta_policy")
__all__ = ["META_METHODS", "METHODS", "method_config", "pretrain", "train_bc"]


def method_config(method: str, base: RACConfig) -> RACConfig:
    """The RAC configuration a method uses (sizes and batches from `base`)."""
    if method in META_METHODS:  # merpo_adp: omega replaced per task at adaptation
        return base
    if method == "rac":
        return dataclasses.replace(base, omega=1.0)
    if method == "lompo":
        # LOMPO: r~ = r - 5 u, H = 5, N(0, 0.2) rollout noise, lr 3e-4, 50/50 real/imagined;
        # no conservative penalty and no behaviour regularizer.
        return dataclasses.replace(base, omega=1.0, lam=0.0, cql_beta=0.0, uncertainty_penalty=5.0,
                                   rollout_noise=0.2, horizon=5, actor_lr=3e-4, critic_lr=3e-4)
    if method == "bc":
        return base
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def pretrain(method: str, data: dict[str, torch.Tensor], rollout_fn: Callable | None, base: RACConfig,
             steps: int, seed: int = 0, progress: Callable[[int, dict], None] | None = None
             ) -> tuple[TanhGaussianActor, TwinCritic | None]:
    """A baseline's learner on the pooled meta-train transitions (`data`)."""
    if method in META_METHODS:
        raise ValueError(f"{method} is meta-trained by `vmerpo train`, not pretrained")
    cfg = method_config(method, base)
    obs_dim, act_dim = data["obs"].shape[1], data["act"].shape[1]
    if method == "bc":
        torch.manual_seed(seed)
        actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden, cfg.layers).to(data["obs"].device)
        train_bc(actor, data, steps, cfg.batch_real, cfg.actor_lr, seed, progress)
        return actor, None
    rac = adapt_rac(None, None, data, rollout_fn, cfg, steps, seed, progress)  # from scratch, no anchor
    return rac.actor, rac.critic
