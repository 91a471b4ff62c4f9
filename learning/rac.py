"""RAC: meta-Regularized model-based Actor-Critic (MerPO, Lin et al. ICLR 2022, section 2b of
docs/algorithms.md), in the world model's latent space s = [z, h].

Read top to bottom like the paper's algorithm box:

    conservative policy evaluation (COMBO-style)
      y     = r + gamma (1-d) (0.75 min_i Q'_i(s',a') + 0.25 max_i Q'_i(s',a') - alpha log pi(a'|s'))
      cql   = logsumexp_{a in 10 unif, 10 pi(s), 10 pi(s')} (Q(s_model, a) - log density(a))
              - mean Q(s_real, a_real)
      L_Q   = 0.5 (Q - y)^2 on f real + (1-f) model  +  beta alpha' (cql - tau_L)

    regularized policy improvement (tanh-Gaussian actor)
      B     = - mean log pi(a_real | s_real)                      behaviour regularizer
      M     = mean KL(N(mu, sd) || N(mu_c, sd_c))  (pre-tanh)     meta-policy regularizer
      L_pi  = alpha log pi - min_i Q_i + lambda (omega B + (1 - omega) M)
      lambda: fixed (MerPO code), or with `lam_target` > 0 by dual ascent towards that
              divergence, B then being KL(pi || pi_beta), pi_beta a BC fit of the task's data

Actions inside RAC live in [-1, 1] (the data's robot-unit actions scaled by the store limits);
the caller converts at the world-model boundary. Rewards are normalized by the caller.
omega = 1 is single-task COMBO with a behaviour prior; omega = 0 pure meta-regularization.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

ACTION_EPS = 1e-4  # clip data actions to +-(1 - 1e-4) before atanh [ours]
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # SAC/COMBO actor bounds


@dataclass
class RACConfig:
    gamma: float = 0.99  # MerPO/COMBO
    tau: float = 5e-3  # polyak of the target critics (MerPO/COMBO)
    actor_lr: float = 1e-3  # MerPO code (LOMPO: 3e-4)
    critic_lr: float = 1e-3  # MerPO code
    hidden: int = 256  # MerPO: 3x256 actor and critics
    layers: int = 3  # MerPO
    batch_real: int = 256  # MerPO/COMBO: 256 real + 256 model
    batch_model: int = 256
    real_ratio: float = 0.5  # f (COMBO): weight of the real rows in the Bellman loss (the model rows: 1 - f)
    horizon: int = 1  # model rollout length: 1 in the MerPO code, 5 in LOMPO
    rollout_batch: int = 256  # start states per rollout refresh [ours]
    rollout_every: int = 10  # RAC steps between rollout refreshes [ours]
    model_buffer: int = 50_000  # imagined transitions kept (FIFO) [ours]
    rollout_noise: float = 0.0  # N(0, sigma) on rollout actions: 0 RAC/COMBO (policy samples), 0.2 LOMPO
    uncertainty_penalty: float = 0.0  # lambda_u on normalized u: 0 RAC/COMBO, 5 LOMPO
    cql_beta: float = 1.0  # beta (MerPO)
    cql_target: float = 5.0  # tau_L, target gap for the dual ascent on alpha' (MerPO)
    cql_n_actions: int = 10  # actions per source in the logsumexp (COMBO)
    cql_states: int = 0  # model states in the conservative term: 0 all of batch_model (COMBO) [ours: CPU]
    cql_alpha_init: float = 1.0  # alpha' initial value [ours]
    cql_alpha_lr: float = 3e-4  # dual ascent step [ours]
    omega: float = 0.4  # behaviour vs meta-policy weight (MerPO's best)
    lam: float = 50.0  # lambda, fixed (MerPO code); with lam_target > 0 its initial value
    # > 0: lambda by dual ascent [ours, docs/algorithms.md]: B becomes KL(pi || pi_beta), pi_beta a
    # behaviour-cloning fit of the task's data (behaviour_fit_steps), and lambda grows while
    # omega KL(pi || pi_beta) + (1 - omega) KL(pi || pi_c) exceeds this target (nats); 0: fixed
    lam_target: float = 0.0
    lam_lr: float = 3e-4  # dual ascent step on log lambda [ours, as cql_alpha_lr]
    behaviour_fit_steps: int = 1000  # BC steps that fit pi_beta when lam_target > 0 [ours]
    # "nll": B = -mean log pi(a_data|s) (MerPO). "advantage": B = -mean w log pi(a_data|s) with
    # w = exp(awr_beta A / mean|A|) (clipped at awr_max_weight, then scaled to batch mean 1), A = Q(s, a_data) -
    # Q(s, a ~ pi): the data actions better than the policy's own pull harder, so the term
    # constrains to the data's support without copying its detours [ours, MerPO v2;
    # docs/algorithms.md says which measurement chose it]
    behaviour_weight: str = "nll"
    awr_beta: float = 1.0
    awr_max_weight: float = 20.0
    entropy_lr: float = 3e-4  # alpha_ent auto-tuning to target entropy -|A| (SAC)
    entropy_init: float = 0.1  # [ours]

    def __post_init__(self) -> None:
        if self.behaviour_weight not in ("nll", "advantage"):
            raise ValueError(f"behaviour_weight {self.behaviour_weight!r}: choose nll or advantage")
        if self.behaviour_weight == "advantage" and self.lam_target > 0:
            raise ValueError("behaviour_weight advantage and lam_target > 0 (KL to pi_beta) are two different "
                             "behaviour terms: choose one")

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(inp: int, hidden: int, layers: int, out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inp if i == 0 else hidden, hidden), nn.ELU()]
    mods.append(nn.Linear(hidden if layers else inp, out))
    return nn.Sequential(*mods)


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sd(s))); `mean_unit` is the deployed action tanh(mu)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, layers, 2 * act_dim)

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.net(obs).chunk(2, -1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized action in [-1, 1] and its log-density."""
        mu, sd = self.dist_params(obs)
        eps = torch.randn(mu.shape, generator=generator).to(mu) if generator is not None else torch.randn_like(mu)
        pre = mu + sd * eps
        return torch.tanh(pre), _tanh_log_prob(pre, mu, sd)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        mu, sd = self.dist_params(obs)
        a = action.clamp(-1 + ACTION_EPS, 1 - ACTION_EPS)
        return _tanh_log_prob(torch.atanh(a), mu, sd)

    def mean_unit(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dist_params(obs)[0])

    def pre_tanh_mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.dist_params(obs)[0]


def _tanh_log_prob(pre: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    normal = -0.5 * ((pre - mu) / sd) ** 2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)
    # log|d tanh/dx| = 2 (log 2 - x - softplus(-2x)), numerically stable
    jac = 2 * (math.log(2) - pre - F.softplus(-2 * pre))
    return (normal - jac).sum(-1)


def advantage_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """Weights exp(beta A / mean|A|) over the last dimension (a batch), clipped at `max_weight`
    and scaled to mean 1, so the weighted term stays on the plain NLL's scale."""
    scale = adv.abs().mean(-1, keepdim=True).clamp_min(1e-6)
    w = torch.exp((beta * adv / scale).clamp(max=math.log(max_weight)))
    return w / w.mean(-1, keepdim=True)


def gaussian_kl(mu1, sd1, mu2, sd2) -> torch.Tensor:
    return (torch.log(sd2 / sd1) + (sd1**2 + (mu1 - mu2) ** 2) / (2 * sd2**2) - 0.5).sum(-1)


class TwinCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, hidden, layers, 1)
        self.q2 = mlp(obs_dim + act_dim, hidden, layers, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class TransitionBuffer:
    """FIFO of latent transitions (obs, act, rew, next_obs, done), tensors on one device."""

    KEYS = ("obs", "act", "rew", "next_obs", "done")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.data["obs"]) if self.data else 0

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        batch = {k: batch[k].detach() for k in self.KEYS}
        if not self.data:
            self.data = batch
        else:
            self.data = {k: torch.cat([self.data[k], batch[k]])[-self.capacity:] for k in self.KEYS}

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(len(self), (n,), generator=generator).to(self.data["obs"].device)
        return {k: v[idx] for k, v in self.data.items()}


# rollout_fn(start_obs [B, F], policy(obs [B, F]) -> unit action [B, A]) ->
#   {"feat": [B, H+1, F], "action": unit [B, H, A], "reward": [B, H] (normalized),
#    "uncertainty": [B, H] (normalized; what lambda_u penalises), optional "raw_uncertainty": [B, H]}
RolloutFn = Callable[[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], dict[str, torch.Tensor]]


class RAC:
    """One task's actor-critic: Q_n, pi_n (and, in MerPO, the meta-policy pi_c it is tied to)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: RACConfig, device: str | torch.device = "cpu",
                 seed: int = 0, actor: TanhGaussianActor | None = None, critic: TwinCritic | None = None) -> None:
        """`actor`/`critic`: modules to train in place instead of new ones (MerPO's fitted Q_meta
        is the critic of a RAC whose actor is pi_c)."""
        self.cfg = cfg
        self.act_dim = act_dim
        self.device = torch.device(device)
        torch.manual_seed(seed)
        self.actor = actor if actor is not None else TanhGaussianActor(obs_dim, act_dim, cfg.hidden, cfg.layers).to(self.device)
        self.critic = critic if critic is not None else TwinCritic(obs_dim, act_dim, cfg.hidden, cfg.layers).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha_ent = torch.tensor(math.log(cfg.entropy_init), device=self.device, requires_grad=True)
        self.log_alpha_cql = torch.tensor(math.log(cfg.cql_alpha_init), device=self.device, requires_grad=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha_ent], lr=cfg.entropy_lr)
        self.cql_opt = torch.optim.Adam([self.log_alpha_cql], lr=cfg.cql_alpha_lr)
        self.log_lam = torch.tensor(math.log(max(cfg.lam, 1e-8)), device=self.device, requires_grad=True)
        self.lam_opt = torch.optim.Adam([self.log_lam], lr=cfg.lam_lr)
        self.behaviour_actor: TanhGaussianActor | None = None  # pi_beta (lam_target > 0 only)
        self.model_buffer = TransitionBuffer(cfg.model_buffer)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0

    # -- initialisation from the meta-learner (meta-test adaptation) ---------------------------
    def load_from(self, actor: nn.Module, critic: nn.Module) -> None:
        """pi_n <- pi_c, Q_n <- Q_meta (targets too)."""
        self.actor.load_state_dict(actor.state_dict())
        self.critic.load_state_dict(critic.state_dict())
        self.critic_target.load_state_dict(critic.state_dict())

    def set_behaviour_policy(self, actor: TanhGaussianActor) -> None:
        """pi_beta for lambda's dual ascent (`lam_target` > 0): a frozen copy of `actor`."""
        self.behaviour_actor = copy.deepcopy(actor).requires_grad_(False)

    @property
    def lam(self) -> float:
        """The current lambda (cfg.lam unless it is dual-ascended)."""
        return float(self.log_lam.detach().exp()) if self.cfg.lam_target > 0 else self.cfg.lam

    # -- model rollouts --------------------------------------------------------------------------
    @torch.no_grad()
    def refresh_rollouts(self, start_obs: torch.Tensor, rollout_fn: RolloutFn) -> dict[str, float]:
        """Imagine `horizon` steps from real latent states with the current policy and add
        the transitions (reward minus lambda_u * u) to the model buffer."""
        cfg = self.cfg

        def policy(obs: torch.Tensor) -> torch.Tensor:
            a, _ = self.actor.sample(obs, self.generator)
            if cfg.rollout_noise:
                a = a + cfg.rollout_noise * torch.randn(a.shape, generator=self.generator).to(a)
            return a.clamp(-1, 1)

        out = rollout_fn(start_obs, policy)
        feat, act = out["feat"], out["action"]
        rew = out["reward"] - cfg.uncertainty_penalty * out["uncertainty"]
        H = act.shape[1]
        self.model_buffer.add({
            "obs": feat[:, :-1].reshape(-1, feat.shape[-1]), "act": act.reshape(-1, act.shape[-1]),
            "rew": rew.reshape(-1), "next_obs": feat[:, 1:].reshape(-1, feat.shape[-1]),
            "done": torch.zeros(feat.shape[0] * H, device=feat.device),
        })
        stats = {"model_reward": float(out["reward"].mean()), "uncertainty": float(out["uncertainty"].mean())}
        if "raw_uncertainty" in out:  # the whole disagreement where the penalty acts on its excess
            stats["raw_uncertainty"] = float(out["raw_uncertainty"].mean())
        return stats

    # -- one RAC step ------------------------------------------------------------------------------
    def update(self, real: dict[str, torch.Tensor], meta_actor: TanhGaussianActor | None = None,
               omega: float | None = None) -> dict[str, float]:
        """One critic + actor step on a real batch and a model-buffer batch."""
        omega = self.cfg.omega if omega is None else omega
        stats = self.critic_step(real)  # the actor step reads the critic, never its target
        stats.update(self._actor_step(real, meta_actor, omega))
        self.steps += 1
        return stats

    def critic_step(self, real: dict[str, torch.Tensor]) -> dict[str, float]:
        """Policy evaluation only: one conservative critic step (on real data and the model
        buffer, if any) and the target update; the actor is left as it is (MerPO's fitted
        Q_meta evaluates pi_c this way)."""
        model = self.model_buffer.sample(self.cfg.batch_model, self.generator) if len(self.model_buffer) else None
        stats = self._critic_step(real, model)
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                tp.lerp_(p, self.cfg.tau)
        return stats

    def _critic_step(self, real: dict[str, torch.Tensor], model: dict[str, torch.Tensor] | None) -> dict[str, float]:
        cfg = self.cfg
        g = self.generator
        batch = real if model is None else {k: torch.cat([real[k], model[k]]) for k in real if k in model}
        alpha = self.log_alpha_ent.exp().detach()
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(batch["next_obs"], g)
            tq1, tq2 = self.critic_target(batch["next_obs"], next_a)
            tq = 0.75 * torch.minimum(tq1, tq2) + 0.25 * torch.maximum(tq1, tq2) - alpha * next_logp
            y = batch["rew"] + cfg.gamma * (1 - batch["done"]) * tq
        q1, q2 = self.critic(batch["obs"], batch["act"])
        n_real = len(real["obs"])
        if model is None or math.isclose(cfg.real_ratio, n_real / len(batch["obs"])):
            # f is the batch's own share of real rows (COMBO's sampling): the plain mean
            bellman = 0.5 * ((q1 - y) ** 2).mean() + 0.5 * ((q2 - y) ** 2).mean()
        else:  # f real + (1 - f) model, whatever the two batch sizes
            f = cfg.real_ratio

            def mixed(sq: torch.Tensor) -> torch.Tensor:
                return f * sq[:n_real].mean() + (1 - f) * sq[n_real:].mean()

            bellman = 0.5 * mixed((q1 - y) ** 2) + 0.5 * mixed((q2 - y) ** 2)

        # conservative term: push Q down on (model states, policy/uniform actions), up on data
        s_model = (model or real)["obs"]
        s_next = (model or real)["next_obs"]
        if cfg.cql_states:  # the batch is already random: its first rows are a random subset
            s_model, s_next = s_model[: cfg.cql_states], s_next[: cfg.cql_states]
        n, A = cfg.cql_n_actions, self.act_dim
        B = s_model.shape[0]
        rep = lambda x: x.repeat_interleave(n, 0)  # noqa: E731
        with torch.no_grad():
            uni = torch.rand(B * n, A, generator=g).to(s_model) * 2 - 1
            uni_logd = torch.full((B * n,), -A * math.log(2.0), device=s_model.device)
            a_cur, logp_cur = self.actor.sample(rep(s_model), g)
            a_nxt, logp_nxt = self.actor.sample(rep(s_next), g)
        gap = []
        for q_net in (self.critic.q1, self.critic.q2):
            cat = torch.cat([
                q_net(torch.cat([rep(s_model), uni], -1)).squeeze(-1) - uni_logd,
                q_net(torch.cat([rep(s_model), a_cur], -1)).squeeze(-1) - logp_cur,
                q_net(torch.cat([rep(s_model), a_nxt], -1)).squeeze(-1) - logp_nxt,
            ]).reshape(3, B, n).permute(1, 0, 2).reshape(B, 3 * n)
            q_data = q_net(torch.cat([real["obs"], real["act"]], -1)).squeeze(-1)
            gap.append(torch.logsumexp(cat, 1).mean() - q_data.mean())
        cql = 0.5 * (gap[0] + gap[1])
        alpha_cql = self.log_alpha_cql.exp().clamp(0.0, 1e6)
        loss = bellman + cfg.cql_beta * alpha_cql.detach() * (cql - cfg.cql_target)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        # dual ascent: alpha' grows while the gap exceeds tau_L
        cql_loss = -self.log_alpha_cql.exp() * (cql.detach() - cfg.cql_target)
        self.cql_opt.zero_grad(set_to_none=True)
        cql_loss.backward()
        self.cql_opt.step()
        return {"q": float(q1.mean().detach()), "bellman": float(bellman.detach()), "conservative_gap": float(cql.detach()),
                "alpha_cql": float(alpha_cql.detach())}

    def _actor_step(self, real: dict[str, torch.Tensor], meta_actor: TanhGaussianActor | None,
                    omega: float) -> dict[str, float]:
        cfg = self.cfg
        obs = real["obs"] if not len(self.model_buffer) else torch.cat(
            [real["obs"], self.model_buffer.sample(cfg.batch_model, self.generator)["obs"]])
        a, logp = self.actor.sample(obs, self.generator)
        q1, q2 = self.critic(obs, a)
        alpha = self.log_alpha_ent.exp().detach()
        logp_data = self.actor.log_prob(real["obs"], real["act"])
        behaviour = -logp_data.mean()
        auto_lam = cfg.lam_target > 0
        use_meta = meta_actor is not None and omega < 1.0
        if auto_lam or use_meta:
            mu, sd = self.actor.dist_params(real["obs"])
        b_term = behaviour
        if cfg.behaviour_weight == "advantage" and not auto_lam:
            with torch.no_grad():
                q_data = torch.minimum(*self.critic(real["obs"], real["act"]))
                v = torch.minimum(q1, q2)[: len(real["obs"])]
                w = advantage_weights(q_data - v, cfg.awr_beta, cfg.awr_max_weight)
            b_term = -(w * logp_data).mean()
        if auto_lam:  # B -> KL(pi || pi_beta): a divergence, >= 0, so a target for it makes sense
            if self.behaviour_actor is None:
                raise RuntimeError("lambda by dual ascent (lam_target > 0) needs pi_beta: call "
                                   "RAC.set_behaviour_policy with a BC fit of the task's data first")
            with torch.no_grad():
                mu_b, sd_b = self.behaviour_actor.dist_params(real["obs"])
            b_term = gaussian_kl(mu, sd, mu_b, sd_b).mean()
        if use_meta:
            assert meta_actor is not None  # use_meta implies it
            with torch.no_grad():
                mu_c, sd_c = meta_actor.dist_params(real["obs"])
            meta_kl = gaussian_kl(mu, sd, mu_c, sd_c).mean()
            reg = omega * b_term + (1 - omega) * meta_kl
        else:
            meta_kl = torch.zeros((), device=obs.device)
            reg = b_term if omega > 0 else torch.zeros((), device=obs.device)
        lam = self.lam
        loss = (alpha * logp - torch.minimum(q1, q2)).mean() + lam * reg
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        extra = {"lam": lam}
        if auto_lam:  # dual ascent: lambda grows while the divergence exceeds its target
            lam_loss = -self.log_lam.exp() * (reg.detach() - cfg.lam_target)
            self.lam_opt.zero_grad(set_to_none=True)
            lam_loss.backward()
            self.lam_opt.step()
            with torch.no_grad():
                self.log_lam.clamp_(math.log(1e-3), math.log(1e4))
            extra["behaviour_kl"] = float(b_term.detach())
        # SAC temperature: drive the entropy towards the target -|A|
        ent_loss = -(self.log_alpha_ent * (logp.detach() - self.act_dim)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        ent_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": float(loss.detach()), "behaviour_nll": float(behaviour.detach()), "meta_kl": float(meta_kl.detach()),
                "alpha_ent": float(alpha), "entropy": float(-logp.mean().detach()), **extra}

    # -- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "log_alpha_ent": self.log_alpha_ent.detach().clone(),
                "log_alpha_cql": self.log_alpha_cql.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "cql_opt": self.cql_opt.state_dict(),
                "generator": self.generator.get_state(), "steps": torch.tensor(self.steps),
                **({"log_lam": self.log_lam.detach().clone(), "lam_opt": self.lam_opt.state_dict()}
                   if self.cfg.lam_target > 0 else {}),
                **({"behaviour_actor": self.behaviour_actor.state_dict()}
                   if self.behaviour_actor is not None else {})}

    def load_state_dict(self, sd: dict) -> None:
        self.actor.load_state_dict(sd["actor"])
        self.critic.load_state_dict(sd["critic"])
        self.critic_target.load_state_dict(sd["critic_target"])
        with torch.no_grad():
            self.log_alpha_ent.copy_(sd["log_alpha_ent"])
            self.log_alpha_cql.copy_(sd["log_alpha_cql"])
        for name in ("actor_opt", "critic_opt", "alpha_opt", "cql_opt"):
            getattr(self, name).load_state_dict(sd[name])
        self.generator.set_state(sd["generator"].cpu())  # a CPU generator; map_location may have moved it
        self.steps = int(sd["steps"])
        if "log_lam" in sd:
            with torch.no_grad():
                self.log_lam.copy_(sd["log_lam"])
            self.lam_opt.load_state_dict(sd["lam_opt"])
        if "behaviour_actor" in sd:
            self.behaviour_actor = copy.deepcopy(self.actor).requires_grad_(False)
            self.behaviour_actor.load_state_dict(sd["behaviour_actor"])
