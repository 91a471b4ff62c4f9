"""LOMPO's latent world model: an RSSM with an ensemble of K prior heads (docs/algorithms.md).

    h' = GRU(ELU(Linear([z, a])), h)                   deterministic state, shared by all members
    z' ~ post(h', embed(o'))                           posterior (filtering)
    z' ~ prior_k(h'),  k = 1..K                        K prior heads: the dynamics ensemble
    r  ~ reward([z', h'])                              reward of the transition into s' = [z', h']
    o' ~ Normal(decoder([z', h']), 1)

MerPO meta-model [ours, docs/algorithms.md]: encoder, decoder, GRU and posterior are shared by all
tasks; the reward head and the K prior heads are task-adapted. They are stored as one bank of
`n_slots` copies (`TaskHeads`): slot 0 is the meta-parameter phi, slots 1.. are theta_n.

Actions enter in robot units (as in the store) and are scaled to [-1, 1] inside the model with
the store's limits, so the exported filter takes the robot's applied action as it is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from perception.networks import (
    ConvDecoder,
    ConvEncoder,
    check_image_size,
    image_to_float,
    take_rows,
)

UNCERTAINTIES = ("log_prob", "max_var", "mean_dis")
RANDOM_PRIOR_SEED = 20180  # the random prior functions' own generator: model init RNG untouched


@dataclass
class WorldModelConfig:
    image_size: int = 64  # LOMPO: 64x64 RGB
    input_size: int = 64  # store image side; area-pooled to image_size inside the model [ours]
    cnn_depth: int = 32  # LOMPO: conv widths 32-64-128-256
    deter: int = 256  # LOMPO: GRU state h
    stoch: int = 64  # LOMPO: Gaussian state z
    hidden: int = 256  # LOMPO: hidden width of img_in, posterior and prior heads
    min_std: float = 0.1  # LOMPO: std = softplus(.) + 0.1
    ensemble: int = 7  # LOMPO: K prior heads
    reward_hidden: int = 256  # LOMPO: reward MLP 2x256 ELU
    reward_layers: int = 2  # LOMPO
    action_dim: int = 4  # from the store (Meta-World: dx, dy, dz, grip)
    state_dim: int = 0  # proprioception concatenated to the embedding; 0 = off [ours, docs/algorithms.md]
    n_slots: int = 1  # task-head slots: 0 = phi, 1.. = theta_n of training tasks [ours, MerPO 2a]
    kl_scale: float = 1.0  # LOMPO: KL weight 1
    kl_balance: float = 0.8  # DreamerV2 KL balancing (prior side) [ours, docs/algorithms.md]
    free_nats: float = 1.0  # DreamerV3 free bits per step [ours; LOMPO/Dreamer v1 used 3 on the mean]
    image_scale: float = 1.0  # LOMPO: image NLL weight 1
    reward_scale: float = 1.0  # LOMPO: 1; CPU preset raises it [ours, docs/algorithms.md]
    uncertainty: str = "log_prob"  # LOMPO default; also max_var, mean_dis
    # Bootstrapped ensemble [ours]: probability that prior member k trains on an episode (a fixed
    # per-episode mask, Osband et al. 2016 use 0.5); every window trains the KL of all its members.
    # 0 = LOMPO: one random member per (sequence, step), so every member sees all the data.
    ensemble_bootstrap: float = 0.0
    # [ours] every prior head also reads the action that led to h' (members f_k(h', a) as in
    # PETS/MOPO ensembles), so members can disagree about an unseen action's effect; LOMPO's heads
    # read h' only, and the shared GRU maps unusual actions into familiar h' (experiments/04-world-model-benchmark).
    prior_action: bool = False
    # [ours] weight of a task-agnostic reward head trained on every window of every task. Each
    # task's reward head can explain its rewards without the shared latent knowing the task; one
    # head for all tasks can only do so if the latent carries the task (reach/push: where the
    # goal marker is), which a multi-task policy then reads. 0 = off (LOMPO/MerPO).
    pooled_reward_scale: float = 0.0
    # [ours] randomized prior functions (Osband et al. 2018): member k's prior mean adds
    # scale * p_k(x), a fixed random MLP on the heads' input (buffers: never trained, one for
    # all task slots). Training makes each head cancel its p_k where the data are, so away from
    # them the members disagree even when the trained parts agree. 0 = off (LOMPO). The bench
    # preset's 3 comes from a sweep 1 / 3 / 10 with heads refit on cached latents
    # (experiments/04-world-model-benchmark).
    prior_random_scale: float = 0.0
    # [ours] gain on the (normalized) action where the random prior functions read it. Their input
    # is [h', a]: with deter 128 and 4 action dims the action carries ~3 % of the pre-activation
    # variance, so the members' random priors barely change with the action. 1 = as drawn.
    prior_random_action_gain: float = 1.0

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        if self.input_size % self.image_size:
            raise ValueError(f"store image size {self.input_size} is not a multiple of the model "
                             f"image size {self.image_size}")
        if not 0.0 <= self.ensemble_bootstrap <= 1.0:
            raise ValueError(f"ensemble_bootstrap {self.ensemble_bootstrap} is not a probability")
        if self.uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty {self.uncertainty!r} not one of {UNCERTAINTIES}")
        if not (math.isfinite(self.prior_random_scale) and self.prior_random_scale >= 0.0):
            raise ValueError(f"prior_random_scale {self.prior_random_scale} must be a finite number >= 0")
        if not (math.isfinite(self.prior_random_action_gain) and self.prior_random_action_gain > 0.0):
            raise ValueError(f"prior_random_action_gain {self.prior_random_action_gain} must be a finite number > 0")

    @property
    def feat_dim(self) -> int:
        return self.stoch + self.deter


def _std(raw: torch.Tensor, min_std: float) -> torch.Tensor:
    return F.softplus(raw) + min_std


def latent_uncertainty(z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor, kind: str) -> torch.Tensor:
    """LOMPO's penalties. z [..., Z]; mu, std [..., K, Z] of the K prior heads -> [...]."""
    if kind == "log_prob":  # std over members of log p_k(z' | h')
        var = std * std
        lp = -0.5 * (((z.unsqueeze(-2) - mu) ** 2) / var + torch.log(2 * math.pi * var)).sum(-1)
        return lp.std(-1, correction=0)
    if kind == "max_var":
        return std.norm(dim=-1).amax(-1)
    if kind == "mean_dis":
        return (mu - mu.mean(-2, keepdim=True)).norm(dim=-1).mean(-1)
    raise ValueError(f"uncertainty {kind!r} not one of {UNCERTAINTIES}")


def gaussian_kl(mu1: torch.Tensor, std1: torch.Tensor, mu2: torch.Tensor, std2: torch.Tensor) -> torch.Tensor:
    """KL(N(mu1, std1) || N(mu2, std2)) summed over the last dim."""
    return (torch.log(std2 / std1) + (std1**2 + (mu1 - mu2) ** 2) / (2 * std2**2) - 0.5).sum(-1)


def _single_slot(slot: torch.Tensor) -> int | None:
    """The slot when every sequence of the batch uses the same one (None otherwise)."""
    first = int(slot[0])
    return first if bool((slot == first).all()) else None


class TaskHeads(nn.Module):
    """The task-adapted parameters theta: K prior heads h' -> (mu, std) and the reward MLP,
    with a leading slot dimension. Every call takes `slot` [B]: the slot of each sequence."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        S, K = cfg.n_slots, cfg.ensemble
        self.cfg = cfg
        self.prior_w1, self.prior_b1 = self._linear((S, K), cfg.deter + cfg.action_dim * cfg.prior_action,
                                                    cfg.hidden)
        self.prior_w2, self.prior_b2 = self._linear((S, K), cfg.hidden, 2 * cfg.stoch)
        sizes = [cfg.feat_dim] + [cfg.reward_hidden] * cfg.reward_layers + [1]
        ws, bs = zip(*(self._linear((S,), i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True)),
                     strict=True)
        self.reward_w, self.reward_b = nn.ParameterList(ws), nn.ParameterList(bs)
        with torch.no_grad():  # every slot starts equal to phi
            for p in self.parameters():
                p[1:] = p[0]

    @staticmethod
    def _linear(lead: tuple[int, ...], fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
        bound = 1 / math.sqrt(fan_in)  # nn.Linear's default init, drawn per head
        w = torch.empty(*lead, fan_in, fan_out).uniform_(-bound, bound)
        b = torch.empty(*lead, fan_out).uniform_(-bound, bound)
        return nn.Parameter(w), nn.Parameter(b)

    def prior(self, h: torch.Tensor, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, ..., D] (with `prior_action`: [h, scaled action]) -> mu, std [B, ..., K, Z] of
        every prior head. `WorldModel.prior` builds the input."""
        B, lead = h.shape[0], h.shape[1:-1]
        x = h.reshape(B, -1, h.shape[-1])
        one = _single_slot(slot)
        if one is not None:  # rollouts of one task: the heads' weights once, not copied per sequence
            x = F.elu(torch.einsum("bnd,kdh->bnkh", x, self.prior_w1[one]) + self.prior_b1[one])
            x = torch.einsum("bnkh,kho->bnko", x, self.prior_w2[one]) + self.prior_b2[one]
        else:
            x = F.elu(torch.einsum("bnd,bkdh->bnkh", x, take_rows(self.prior_w1, slot))
                      + take_rows(self.prior_b1, slot)[:, None])
            x = torch.einsum("bnkh,bkho->bnko", x, take_rows(self.prior_w2, slot)) + take_rows(self.prior_b2, slot)[:, None]
        mu, raw = x.float().reshape(B, *lead, *x.shape[-2:]).chunk(2, -1)  # fp32 under bf16 autocast
        return mu, _std(raw, self.cfg.min_std)

    def reward(self, feat: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """feat [B, ..., F] -> predicted reward [B, ...] (mean of Normal(., 1))."""
        B, lead = feat.shape[0], feat.shape[1:-1]
        x = feat.reshape(B, -1, feat.shape[-1])
        n = len(self.reward_w)
        one = _single_slot(slot)
        for i, (w, b) in enumerate(zip(self.reward_w, self.reward_b, strict=True)):
            x = (x @ w[one] + b[one] if one is not None
                 else torch.bmm(x, take_rows(w, slot)) + take_rows(b, slot)[:, None])
            if i < n - 1:
                x = F.elu(x)
        return x.float().reshape(B, *lead)

    def proximal(self, slots: torch.Tensor) -> torch.Tensor:
        """sum_n ||theta_n - phi||^2 over the given slots (MerPO's proximal term)."""
        return cast(torch.Tensor, sum(((take_rows(p, slots) - p[0:1]) ** 2).sum() for p in self.parameters()))


class WorldModel(nn.Module):
    # Buffers (register_buffer in __init__), declared for the type checker.
    action_low: torch.Tensor
    action_high: torch.Tensor
    state_mean: torch.Tensor
    state_std: torch.Tensor

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ConvEncoder(cfg.image_size, cfg.cnn_depth)
        self.embed_dim = self.encoder.out_dim + cfg.state_dim
        self.img_in = nn.Linear(cfg.stoch + cfg.action_dim, cfg.hidden)
        self.gru = nn.GRUCell(cfg.hidden, cfg.deter)
        self.post = nn.Sequential(nn.Linear(cfg.deter + self.embed_dim, cfg.hidden), nn.ELU(),
                                  nn.Linear(cfg.hidden, 2 * cfg.stoch))
        self.heads = TaskHeads(cfg)
        if cfg.prior_random_scale:  # fixed random prior functions, drawn from their own seed
            g = torch.Generator().manual_seed(RANDOM_PRIOR_SEED)
            fan_in = cfg.deter + cfg.action_dim * cfg.prior_action
            for name, shape in (("prior_rand_w1", (cfg.ensemble, fan_in, cfg.hidden)),
                                ("prior_rand_w2", (cfg.ensemble, cfg.hidden, cfg.stoch))):
                bound = math.sqrt(3.0 / shape[1])  # unit-variance pre-activations for unit inputs
                self.register_buffer(name, (torch.rand(shape, generator=g) * 2 - 1) * bound)
        self.decoder = ConvDecoder(cfg.feat_dim, cfg.image_size, cfg.cnn_depth)
        if cfg.pooled_reward_scale:  # training signal only; rollouts use the task heads
            self.pooled_reward = nn.Sequential(nn.Linear(cfg.feat_dim, cfg.reward_hidden), nn.ELU(),
                                               nn.Linear(cfg.reward_hidden, 1))
        # Data statistics, set from the store before training; exported with the model.
        self.register_buffer("action_low", -torch.ones(cfg.action_dim))
        self.register_buffer("action_high", torch.ones(cfg.action_dim))
        self.register_buffer("state_mean", torch.zeros(cfg.state_dim))
        self.register_buffer("state_std", torch.ones(cfg.state_dim))

    # -- inputs -------------------------------------------------------------------------------
    def images_in(self, image_u8: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] at store size -> float [N, 3, s, s] at model size (area pooling)."""
        x = image_to_float(image_u8)
        f = self.cfg.input_size // self.cfg.image_size
        return F.avg_pool2d(x, f) if f > 1 else x

    def encode(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """float images [N, 3, s, s] (+ proprioception [N, S]) -> embedding [N, E]."""
        e = self.encoder(x)
        if self.cfg.state_dim:
            if state is None:
                raise ValueError("this model takes proprioceptive state as input")
            e = torch.cat([e, (state - self.state_mean) / self.state_std], -1)
        return e

    def action_in(self, action: torch.Tensor) -> torch.Tensor:
        return 2 * (action - self.action_low) / (self.action_high - self.action_low) - 1

    def initial(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.img_in.weight
        return p.new_zeros(batch, self.cfg.deter), p.new_zeros(batch, self.cfg.stoch)

    def prior(self, h: torch.Tensor, slot: torch.Tensor, action: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The K prior heads at h' [B, ..., D]; `action` [B, ..., A] (robot units) is the action
        that led to h', read by the heads only with `prior_action`."""
        if self.cfg.prior_action:
            if action is None:
                raise ValueError("this model's prior heads take the action")
            h = torch.cat([h, self.action_in(action).to(h.dtype)], -1)
        mu, std = self.heads.prior(h, slot)
        if self.cfg.prior_random_scale:
            if self.cfg.prior_action and self.cfg.prior_random_action_gain != 1.0:
                D = self.cfg.deter
                h = torch.cat([h[..., :D], self.cfg.prior_random_action_gain * h[..., D:]], -1)
            p = torch.tanh(torch.einsum("...d,kdh->...kh", h, self.prior_rand_w1.to(h.dtype)))
            p = torch.einsum("...kh,kho->...ko", p, self.prior_rand_w2.to(p.dtype))
            mu = mu + self.cfg.prior_random_scale * p.float()
        return mu, std

    # -- one filter step: the deployment form (docs/architecture.md) --------------------------
    def transition(self, h: torch.Tensor, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """h' = GRU(ELU(Linear([z, a])), h); a in robot units."""
        return self.gru(F.elu(self.img_in(torch.cat([z, self.action_in(action)], -1))), h)

    def posterior(self, h: torch.Tensor, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.post(torch.cat([h, embed], -1)).float().chunk(2, -1)
        return mu, _std(raw, self.cfg.min_std)

    def step(self, image_u8: torch.Tensor, prev_action: torch.Tensor, h: torch.Tensor,
             z: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic filter step (z' = posterior mean): no randomness, exports to ONNX."""
        embed = self.encode(self.images_in(image_u8), state)
        h = self.transition(h, z, prev_action)
        return h, self.posterior(h, embed)[0]

    # -- sequences ----------------------------------------------------------------------------
    def observe(self, embed: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None,
                h: torch.Tensor | None = None, z: torch.Tensor | None = None,
                prev_action: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Filter a sequence. embed [B, L, E], action [B, L, A] (row t: action after o_t).

        Step t consumes the previous action (zeros at a reset) and o_t. With a generator z is
        sampled from the posterior (training); without, z is the posterior mean (deployment).
        Returns h, z, post_mu, post_std, each [B, L, .].
        """
        B, L = embed.shape[:2]
        if h is None or z is None:
            h, z = self.initial(B)
        a_prev = action.new_zeros(B, action.shape[-1]) if prev_action is None else prev_action
        out: dict[str, list[torch.Tensor]] = {"h": [], "z": [], "post_mu": [], "post_std": []}
        for t in range(L):
            h = self.transition(h, z, a_prev)
            mu, std = self.posterior(h, embed[:, t])
            z = mu if generator is None else mu + std * _randn(mu, generator)
            for k, v in zip(out, (h, z, mu, std), strict=True):
                out[k].append(v)
            a_prev = action[:, t]
        return {k: torch.stack(v, 1) for k, v in out.items()}

    def imagine(self, h: torch.Tensor, z: torch.Tensor, policy: Callable[[torch.Tensor, int], torch.Tensor],
                horizon: int, slot: torch.Tensor, generator: torch.Generator,
                uncertainty: str | None = None, sample: bool = True) -> dict[str, torch.Tensor]:
        """Roll the prior ensemble H steps from (h, z) [B, .]; each step draws z' from a random
        member per sequence (LOMPO). `policy(feat [B, F], t) -> action [B, A]` (robot units).
        sample=False takes the drawn member's mean instead of a sample from it: imagined states
        are then modes, like the mode filter's real latents (`learning.latents`).

        Returns feat [B, H+1, F] (start included), action [B, H, A], reward [B, H] (of the
        transition t -> t+1, from s_{t+1}) and uncertainty [B, H] of each imagined step.
        """
        kind = uncertainty or self.cfg.uncertainty
        feats, actions, rewards, uncert = [torch.cat([z, h], -1)], [], [], []
        for t in range(horizon):
            a = policy(feats[-1], t)
            h = self.transition(h, z, a)
            mu, std = self.prior(h, slot, a)  # [B, K, Z]
            k = torch.randint(self.cfg.ensemble, (h.shape[0],), generator=generator).to(h.device)
            pick = torch.arange(h.shape[0], device=h.device)
            z = mu[pick, k] + std[pick, k] * _randn(mu[:, 0], generator) if sample else mu[pick, k]
            feat = torch.cat([z, h], -1)
            feats.append(feat)
            actions.append(a)
            rewards.append(self.heads.reward(feat, slot))
            uncert.append(latent_uncertainty(z, mu, std, kind))
        return {"feat": torch.stack(feats, 1), "action": torch.stack(actions, 1),
                "reward": torch.stack(rewards, 1), "uncertainty": torch.stack(uncert, 1)}

    # -- training objective --------------------------------------------------------------------
    def losses(self, image_u8: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
               slot: torch.Tensor, generator: torch.Generator, state: torch.Tensor | None = None,
               shift_pad: int = 0, decode_fraction: float = 1.0,
               member_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """LOMPO loss on windows [B, L]: KL(post || prior_k) - log p(o|s) - log p(r|s).

        KL with a random member k per step, DreamerV2 balancing and per-step free nats; with
        `member_mask` [B, K] (the bootstrap: which members train on each window's episode) the
        prior side trains every masked-in member instead (the posterior side keeps member k);
        random shift of encoder inputs (the decoder target stays unshifted); the image NLL
        on a random `decode_fraction` of the frames. Returns the weighted "loss" and its parts.
        """
        cfg = self.cfg
        B, L = image_u8.shape[:2]
        x = self.images_in(image_u8.flatten(0, 1))
        x_in = random_shift(x, shift_pad, generator, group=L) if shift_pad else x
        st = None if state is None or not cfg.state_dim else state.flatten(0, 1)
        embed = self.encode(x_in, st).unflatten(0, (B, L))
        post = self.observe(embed, action, generator)
        a_prev = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)  # the action into h_t
        prior_mu, prior_std = self.prior(post["h"], slot, a_prev)  # [B, L, K, Z]
        k = torch.randint(cfg.ensemble, (B, L, 1, 1), generator=generator).to(x.device)
        k = k.expand(B, L, 1, cfg.stoch)
        pm, ps = prior_mu.gather(2, k)[:, :, 0], prior_std.gather(2, k)[:, :, 0]
        qm, qs = post["post_mu"], post["post_std"]
        kl_prior = gaussian_kl(qm.detach(), qs.detach(), pm, ps)  # trains the prior
        kl_post = gaussian_kl(qm, qs, pm.detach(), ps.detach())  # regularises the posterior
        kl_prior_term = kl_prior.clamp(min=cfg.free_nats)
        if member_mask is not None:  # bootstrap: each member on its own episodes
            kl_all = gaussian_kl(qm.detach()[:, :, None], qs.detach()[:, :, None], prior_mu, prior_std)
            w = member_mask.to(kl_all.dtype)[:, None, :]  # [B, 1, K]
            kl_prior_term = (kl_all.clamp(min=cfg.free_nats) * w).sum(-1) / w.sum(-1).clamp(min=1.0)
        kl = cfg.kl_balance * kl_prior_term + (1 - cfg.kl_balance) * kl_post.clamp(min=cfg.free_nats)
        feat = torch.cat([post["z"], post["h"]], -1)
        r_hat = self.heads.reward(feat[:, 1:], slot)  # s_{t+1} predicts the reward of row t
        reward_nll = 0.5 * ((r_hat - reward[:, :-1]) ** 2).mean()
        n_dec = max(1, round(decode_fraction * B * L))
        idx = torch.randperm(B * L, generator=generator)[:n_dec].to(x.device)
        recon = self.decoder(feat.flatten(0, 1)[idx])
        image_nll = 0.5 * ((recon.float() - x[idx]) ** 2).sum((1, 2, 3)).mean()
        kl_mean = kl.mean()
        loss = cfg.kl_scale * kl_mean + cfg.image_scale * image_nll + cfg.reward_scale * reward_nll
        out = {"kl": kl_prior.mean().detach(), "kl_loss": kl_mean.detach(),
               "image_nll": image_nll.detach(), "reward_nll": reward_nll.detach(),
               "post_std": qs.mean().detach(), "prior_std": ps.mean().detach()}
        if cfg.pooled_reward_scale:
            r_pool = self.pooled_reward(feat[:, 1:]).squeeze(-1).float()
            pooled_nll = 0.5 * ((r_pool - reward[:, :-1]) ** 2).mean()
            loss = loss + cfg.pooled_reward_scale * pooled_nll
            out["pooled_reward_nll"] = pooled_nll.detach()
        return {"loss": loss, **out}


def _randn(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise from an explicit (CPU) generator, on the tensor's device."""
    return torch.randn(like.shape, generator=generator).to(like.device, like.dtype)


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator, group: int = 1) -> torch.Tensor:
    """DrQ random shift (replicate-pad by `pad`, random crop back) of images [N, C, H, W], one
    shift per `group` consecutive images (one per sequence, so the dynamics see a still camera).
    Drawn from an explicit generator: torchvision's RandomCrop uses the global RNG and one
    crop per call, which would break exact resume [ours]."""
    N, C, H, W = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (N // group, 2), generator=generator).tolist()
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate").unflatten(0, (N // group, group))
    return torch.stack([p[:, :, dy:dy + H, dx:dx + W] for p, (dy, dx) in zip(padded, offsets, strict=True)]
                       ).flatten(0, 1)


# Options that left the model, with the value that meant "off": run directories written with
# them off still load; one that used them is refused by name.
RETIRED_OPTIONS = {"prior_context_scale": 0.0}


def config_from_dict(d: dict) -> WorldModelConfig:
    names = {f.name for f in dataclasses.fields(WorldModelConfig)}
    d = dict(d)
    for key, off in RETIRED_OPTIONS.items():
        if key in d and d.pop(key) != off:
            raise ValueError(f"world-model option {key!r} is no longer supported (only {off} = off); "
                             "remove it from the config")
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown world-model config keys: {sorted(unknown)}")
    return WorldModelConfig(**d)
