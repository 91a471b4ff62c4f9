"""K RAC task learners as one set of kernels: parameters stacked along a task dimension.

`BatchedRAC` runs the update of `learning.rac.RAC` (docs/algorithms.md, section 2b) for K
tasks at once. Every network is a stack of K (the critic: 2K, both heads) MLPs whose layers are
batched matmuls (`torch.baddbmm`), so one update is a fixed, short chain of large kernels
instead of K long chains of small ones, and one Adam step serves all K tasks.

Results do not depend on K or on which tasks share a batch: each task keeps its own data,
model buffer and random stream (a `torch.Generator` drawn in exactly the order `RAC` draws),
the losses are summed over tasks (so task k's gradient is its own loss's), and Adam, Polyak
averaging and the dual variables are elementwise. `tests/learning/test_batched_rac.py` checks
that a batched update of K tasks equals K `RAC.update`s to float tolerance.

Nothing in an update leaves the device: the statistics are [K] tensors, converted to numbers
only where they are logged (`stats_to_floats`).

Shapes: obs [K, N, F], act [K, N, A], rew and done [K, N].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learning.rac import (
    ACTION_EPS,
    LOG_STD_MAX,
    LOG_STD_MIN,
    RAC,
    RACConfig,
    RolloutFn,
    TanhGaussianActor,
)

Batch = dict[str, torch.Tensor]


class StackedMLP(nn.Module):
    """M independent MLPs (Linear + ELU, ..., Linear) evaluated as batched matmuls.

    weights[i]: [M, in, out] (nn.Linear's weight transposed), biases[i]: [M, 1, out]."""

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(w.detach().clone()) for w in weights])
        self.biases = nn.ParameterList([nn.Parameter(b.detach().clone()) for b in biases])

    @staticmethod
    def from_sequentials(nets: Sequence[nn.Sequential]) -> StackedMLP:
        """Stack nn.Sequential MLPs of `learning.rac.mlp`'s layout (the same sizes)."""
        linears = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        depth = len(linears[0])
        w = [torch.stack([ls[i].weight.detach().t() for ls in linears]) for i in range(depth)]
        b = [torch.stack([ls[i].bias.detach()[None] for ls in linears]) for i in range(depth)]
        return StackedMLP(w, b)

    @property
    def members(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.elu(x)
        return x

    def forward_one(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Member k alone on x [N, in] (model rollouts, export)."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.addmm(b[k], x, w[k])
            if i < last:
                x = F.elu(x)
        return x

    def load_into(self, k: int, net: nn.Sequential) -> None:
        """Copy member k into an nn.Sequential of the same layout."""
        linears = [m for m in net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(linears, self.weights, self.biases, strict=True):
                lin.weight.copy_(w[k].t())
                lin.bias.copy_(b[k, 0])

    def set_member(self, k: int, net: nn.Sequential) -> None:
        """Member k <- an nn.Sequential of the same layout."""
        linears = [m for m in net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(linears, self.weights, self.biases, strict=True):
                w[k].copy_(lin.weight.t())
                b[k, 0].copy_(lin.bias)


def _dist(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, log_std = out.chunk(2, -1)
    return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()


def _tanh_log_prob(pre: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    normal = -0.5 * ((pre - mu) / sd) ** 2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)
    jac = 2 * (math.log(2) - pre - F.softplus(-2 * pre))
    return (normal - jac).sum(-1)


def _kl(mu1, sd1, mu2, sd2) -> torch.Tensor:
    return (torch.log(sd2 / sd1) + (sd1**2 + (mu1 - mu2) ** 2) / (2 * sd2**2) - 0.5).sum(-1)


def stats_to_floats(stats: dict[str, torch.Tensor], k: int | None = None) -> dict[str, float]:
    """The [K] statistics of an update as numbers (one host transfer): task k's, or the mean."""
    keys = list(stats)
    if not keys:
        return {}
    vals = torch.stack([stats[n].detach().float().reshape(-1) for n in keys]).cpu()
    col = vals.mean(1) if k is None else vals[:, k]
    return {n: float(v) for n, v in zip(keys, col.tolist(), strict=True)}


class BatchedRAC:
    """K RAC learners (same sizes and config) updated together. Build it from K `RAC`s
    (`from_racs`, which copies their parameters, optimizer moments, duals and generators) or
    directly with seeds (each task initialised exactly as `RAC(..., seed=seed_k)` would be)."""

    def __init__(self, racs: Sequence[RAC]) -> None:
        """Stack K RACs: their parameters, optimizer moments, duals, buffers; their generators
        are shared (one random stream per task)."""
        r0 = racs[0]
        cfg = r0.cfg
        self.cfg = cfg
        self.K = len(racs)
        self.act_dim = r0.act_dim
        self.device = r0.device
        self.actor = StackedMLP.from_sequentials([r.actor.net for r in racs])
        # both critic heads of every task in one stack: members [0, K) are q1, [K, 2K) are q2
        self.critic = StackedMLP.from_sequentials([r.critic.q1 for r in racs] + [r.critic.q2 for r in racs])
        self.critic_target = StackedMLP.from_sequentials(
            [r.critic_target.q1 for r in racs] + [r.critic_target.q2 for r in racs]).requires_grad_(False)
        self.log_alpha_ent = torch.stack([r.log_alpha_ent.detach() for r in racs]).requires_grad_(True)
        self.log_alpha_cql = torch.stack([r.log_alpha_cql.detach() for r in racs]).requires_grad_(True)
        self.log_lam = torch.stack([r.log_lam.detach() for r in racs]).requires_grad_(True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha_ent], lr=cfg.entropy_lr)
        self.cql_opt = torch.optim.Adam([self.log_alpha_cql], lr=cfg.cql_alpha_lr)
        self.lam_opt = torch.optim.Adam([self.log_lam], lr=cfg.lam_lr)
        self._copy_optimizer_states(racs)
        self.behaviour: StackedMLP | None = None
        if any(r.behaviour_actor is not None for r in racs):
            if not all(r.behaviour_actor is not None for r in racs):
                raise ValueError("either every task learner has a behaviour policy (lam_target > 0) or none")
            self.behaviour = StackedMLP.from_sequentials(
                [r.behaviour_actor.net for r in racs if r.behaviour_actor is not None]).requires_grad_(False)
        self.generators = [r.generator for r in racs]  # shared with the RACs: one random stream per task
        self.buffer: Batch = {}
        lengths = {len(r.model_buffer) for r in racs}
        if lengths != {0}:
            if len(lengths) != 1:
                raise ValueError(f"task model buffers of different lengths {sorted(lengths)} cannot be stacked")
            self.buffer = {n: torch.stack([r.model_buffer.data[n] for r in racs]) for n in r0.model_buffer.KEYS}
        self.steps = [r.steps for r in racs]

    @classmethod
    def from_racs(cls, racs: Sequence[RAC]) -> BatchedRAC:
        return cls(racs)

    @classmethod
    def create(cls, obs_dim: int, act_dim: int, cfg: RACConfig, seeds: Sequence[int],
               device: str | torch.device = "cpu") -> BatchedRAC:
        """K fresh learners, task k initialised exactly as `RAC(..., seed=seeds[k])`."""
        return cls([RAC(obs_dim, act_dim, cfg, device, seed=s) for s in seeds])

    def _copy_optimizer_states(self, racs: Sequence[RAC]) -> None:
        """Adam's moments and step counts from the K RACs (fresh RACs: nothing to copy)."""
        if not racs[0].actor_opt.state:
            return
        if len({int(r.steps) for r in racs}) != 1:
            raise ValueError("task learners at different step counts cannot share one Adam step count")
        for name, stacked_params, per_task in (
                ("actor_opt", list(self.actor.parameters()), [list(r.actor.net.parameters()) for r in racs]),
                ("critic_opt", list(self.critic.parameters()),
                 [list(r.critic.q1.parameters()) for r in racs] + [list(r.critic.q2.parameters()) for r in racs])):
            opt = getattr(self, name)
            src_opts = [getattr(r, name) for r in racs]
            n_layers = len(stacked_params) // 2  # ParameterList order: weights then biases
            for j, p in enumerate(stacked_params):
                is_w, layer = j < n_layers, j % n_layers
                moments = {}
                for key in ("exp_avg", "exp_avg_sq"):
                    rows = []
                    for m, params in enumerate(per_task):
                        src = src_opts[m % len(racs)].state[params[2 * layer + (0 if is_w else 1)]][key]
                        rows.append(src.t() if is_w else src[None])
                    moments[key] = torch.stack(rows).to(p)
                step = src_opts[0].state[per_task[0][0]]["step"].clone()
                opt.state[p] = {"step": step, **moments}
        for name, attr in (("alpha_opt", "log_alpha_ent"), ("cql_opt", "log_alpha_cql"), ("lam_opt", "log_lam")):
            srcs = [getattr(r, name).state.get(getattr(r, attr)) for r in racs]
            if srcs[0]:
                p = getattr(self, attr)
                getattr(self, name).state[p] = {
                    "step": srcs[0]["step"].clone(),
                    **{key: torch.stack([s[key] for s in srcs]) for key in ("exp_avg", "exp_avg_sq")}}

    # -- back to per-task learners ---------------------------------------------------------------
    def actor_of(self, k: int) -> TanhGaussianActor:
        """Task k's actor as a `TanhGaussianActor` (a copy: for rollouts elsewhere, export)."""
        w = self.actor.weights
        actor = TanhGaussianActor(w[0].shape[1], self.act_dim, self.cfg.hidden, self.cfg.layers).to(w[0])
        self.actor.load_into(k, actor.net)
        return actor

    # -- the per-task random streams -------------------------------------------------------------
    def _noise(self, n_real: int) -> dict[str, torch.Tensor]:
        """Every random number of one update, per task in the order RAC.update draws them."""
        cfg, A = self.cfg, self.act_dim
        n_buf = len(self)
        b_model = cfg.batch_model if n_buf else 0
        b_cql = b_model or n_real
        if cfg.cql_states:
            b_cql = min(b_cql, cfg.cql_states)
        draws: dict[str, list[torch.Tensor]] = {n: [] for n in
                                                ("idx_c", "next", "uni", "cur", "nxt", "idx_a", "act")}
        for g in self.generators:
            if n_buf:
                draws["idx_c"].append(torch.randint(n_buf, (b_model,), generator=g))
            draws["next"].append(torch.randn(n_real + b_model, A, generator=g))
            draws["uni"].append(torch.rand(b_cql * cfg.cql_n_actions, A, generator=g))
            draws["cur"].append(torch.randn(b_cql * cfg.cql_n_actions, A, generator=g))
            draws["nxt"].append(torch.randn(b_cql * cfg.cql_n_actions, A, generator=g))
            if n_buf:
                draws["idx_a"].append(torch.randint(n_buf, (b_model,), generator=g))
            draws["act"].append(torch.randn(n_real + b_model, A, generator=g))
        return {n: torch.stack(v).to(self.device) for n, v in draws.items() if v}

    def __len__(self) -> int:
        return self.buffer["obs"].shape[1] if self.buffer else 0

    def _sample_buffer(self, idx: torch.Tensor) -> Batch:
        rows = torch.arange(self.K, device=idx.device)[:, None]
        return {n: v[rows, idx] for n, v in self.buffer.items()}

    # -- model rollouts --------------------------------------------------------------------------
    @torch.no_grad()
    def refresh_rollouts(self, start_obs: torch.Tensor, rollout_fns: Sequence[RolloutFn]) -> dict[str, torch.Tensor]:
        """RAC.refresh_rollouts for every task: start_obs [K, B, F], one rollout function per
        task (its world-model slot); the imagined transitions go to each task's buffer."""
        cfg = self.cfg
        outs = []
        for k, fn in enumerate(rollout_fns):
            g = self.generators[k]

            def policy(obs: torch.Tensor, k: int = k, g: torch.Generator = g) -> torch.Tensor:
                mu, sd = _dist(self.actor.forward_one(k, obs))
                eps = torch.randn(mu.shape, generator=g).to(mu)
                a = torch.tanh(mu + sd * eps)
                if cfg.rollout_noise:
                    a = a + cfg.rollout_noise * torch.randn(a.shape, generator=g).to(a)
                return a.clamp(-1, 1)

            outs.append(fn(start_obs[k], policy))
        feat = torch.stack([o["feat"] for o in outs])
        act = torch.stack([o["action"] for o in outs])
        model_rew = torch.stack([o["reward"] for o in outs])
        unc = torch.stack([o["uncertainty"] for o in outs])
        rew = model_rew - cfg.uncertainty_penalty * unc
        K, B, H = act.shape[:3]
        new = {"obs": feat[:, :, :-1].reshape(K, B * H, -1), "act": act.reshape(K, B * H, -1),
               "rew": rew.reshape(K, B * H), "next_obs": feat[:, :, 1:].reshape(K, B * H, -1),
               "done": torch.zeros(K, B * H, device=feat.device)}
        if not self.buffer:
            self.buffer = {n: v[:, -cfg.model_buffer:] for n, v in new.items()}
        else:
            self.buffer = {n: torch.cat([self.buffer[n], new[n]], 1)[:, -cfg.model_buffer:] for n in new}
        return {"model_reward": model_rew.mean((1, 2)), "uncertainty": unc.mean((1, 2))}

    # -- one update of every task ----------------------------------------------------------------
    def update(self, real: Batch, meta_actor: TanhGaussianActor | None = None,
               omega: float | None = None) -> dict[str, torch.Tensor]:
        """RAC.update for the K tasks: real[n] is [K, batch_real, ...]. Statistics are [K]."""
        omega = self.cfg.omega if omega is None else omega
        noise = self._noise(real["obs"].shape[1])
        stats = self._critic_step(real, noise)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.cfg.tau)
        stats.update(self._actor_step(real, noise, meta_actor, omega))
        self.steps = [s + 1 for s in self.steps]
        return stats

    def _q(self, net: StackedMLP, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], -1)
        q = net(torch.cat([x, x])).squeeze(-1)
        return q[: self.K], q[self.K:]

    def _critic_step(self, real: Batch, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, K, A = self.cfg, self.K, self.act_dim
        model = self._sample_buffer(noise["idx_c"]) if "idx_c" in noise else None
        n_real = real["obs"].shape[1]
        batch = real if model is None else {n: torch.cat([real[n], model[n]], 1) for n in real if n in model}
        s_model = (model or real)["obs"]
        s_next = (model or real)["next_obs"]
        if cfg.cql_states:
            s_model, s_next = s_model[:, : cfg.cql_states], s_next[:, : cfg.cql_states]
        n = cfg.cql_n_actions
        B = s_model.shape[1]
        rep_model = s_model.repeat_interleave(n, 1)
        rep_next = s_next.repeat_interleave(n, 1)
        alpha = self.log_alpha_ent.exp().detach()[:, None]
        with torch.no_grad():
            # one actor pass for the target's next actions and both sets of CQL actions
            nb = batch["next_obs"].shape[1]
            mu, sd = _dist(self.actor(torch.cat([batch["next_obs"], rep_model, rep_next], 1)))
            eps = torch.cat([noise["next"], noise["cur"], noise["nxt"]], 1)
            pre = mu + sd * eps
            acts, logps = torch.tanh(pre), _tanh_log_prob(pre, mu, sd)
            next_a, next_logp = acts[:, :nb], logps[:, :nb]
            a_cur, logp_cur = acts[:, nb: nb + B * n], logps[:, nb: nb + B * n]
            a_nxt, logp_nxt = acts[:, nb + B * n:], logps[:, nb + B * n:]
            tq1, tq2 = self._q(self.critic_target, batch["next_obs"], next_a)
            tq = 0.75 * torch.minimum(tq1, tq2) + 0.25 * torch.maximum(tq1, tq2) - alpha * next_logp
            y = batch["rew"] + cfg.gamma * (1 - batch["done"]) * tq
            uni = noise["uni"] * 2 - 1
        # one critic pass (both heads, every task) over the Bellman rows, the CQL rows and the data rows
        obs_all = torch.cat([batch["obs"], rep_model, rep_model, rep_model, real["obs"]], 1)
        act_all = torch.cat([batch["act"], uni, a_cur, a_nxt, real["act"]], 1)
        q1_all, q2_all = self._q(self.critic, obs_all, act_all)
        nB, m = batch["obs"].shape[1], B * n
        uni_logd = -A * math.log(2.0)

        def split(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            qb = q[:, :nB]
            off = nB
            cat = torch.stack([q[:, off: off + m] - uni_logd, q[:, off + m: off + 2 * m] - logp_cur,
                               q[:, off + 2 * m: off + 3 * m] - logp_nxt], 1)  # [K, 3, B*n]
            cat = cat.reshape(K, 3, B, n).permute(0, 2, 1, 3).reshape(K, B, 3 * n)
            gap = torch.logsumexp(cat, 2).mean(1) - q[:, off + 3 * m:].mean(1)
            return qb, cat, gap

        q1, _, gap1 = split(q1_all)
        q2, _, gap2 = split(q2_all)
        sq1, sq2 = (q1 - y) ** 2, (q2 - y) ** 2
        if model is None or math.isclose(cfg.real_ratio, n_real / nB):
            bellman = 0.5 * sq1.mean(1) + 0.5 * sq2.mean(1)
        else:
            f = cfg.real_ratio

            def mixed(sq: torch.Tensor) -> torch.Tensor:
                return f * sq[:, :n_real].mean(1) + (1 - f) * sq[:, n_real:].mean(1)

            bellman = 0.5 * mixed(sq1) + 0.5 * mixed(sq2)
        cql = 0.5 * (gap1 + gap2)  # [K]
        alpha_cql = self.log_alpha_cql.exp().clamp(0.0, 1e6)
        loss = (bellman + cfg.cql_beta * alpha_cql.detach() * (cql - cfg.cql_target)).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        cql_loss = (-self.log_alpha_cql.exp() * (cql.detach() - cfg.cql_target)).sum()
        self.cql_opt.zero_grad(set_to_none=True)
        cql_loss.backward()
        self.cql_opt.step()
        return {"q": q1.detach().mean(1), "bellman": bellman.detach(), "conservative_gap": cql.detach(),
                "alpha_cql": alpha_cql.detach()}

    def _actor_step(self, real: Batch, noise: dict[str, torch.Tensor], meta_actor: TanhGaussianActor | None,
                    omega: float) -> dict[str, torch.Tensor]:
        cfg, K = self.cfg, self.K
        n_real = real["obs"].shape[1]
        obs = real["obs"] if "idx_a" not in noise else torch.cat(
            [real["obs"], self._sample_buffer(noise["idx_a"])["obs"]], 1)
        mu_all, sd_all = _dist(self.actor(obs))
        pre = mu_all + sd_all * noise["act"]
        a, logp = torch.tanh(pre), _tanh_log_prob(pre, mu_all, sd_all)
        q1, q2 = self._q(self.critic, obs, a)
        alpha = self.log_alpha_ent.exp().detach()
        mu, sd = mu_all[:, :n_real], sd_all[:, :n_real]  # the real rows: behaviour and meta terms
        data_act = real["act"].clamp(-1 + ACTION_EPS, 1 - ACTION_EPS)
        behaviour = -_tanh_log_prob(torch.atanh(data_act), mu, sd).mean(1)  # [K]
        auto_lam = cfg.lam_target > 0
        use_meta = meta_actor is not None and omega < 1.0
        b_term = behaviour
        if auto_lam:
            if self.behaviour is None:
                raise RuntimeError("lambda by dual ascent (lam_target > 0) needs pi_beta: call "
                                   "RAC.set_behaviour_policy on each task learner before batching them")
            with torch.no_grad():
                mu_b, sd_b = _dist(self.behaviour(real["obs"]))
            b_term = _kl(mu, sd, mu_b, sd_b).mean(1)
        if use_meta:
            assert meta_actor is not None
            with torch.no_grad():
                mu_c, sd_c = meta_actor.dist_params(real["obs"].reshape(K * n_real, -1))
                mu_c, sd_c = mu_c.reshape(mu.shape), sd_c.reshape(sd.shape)
            meta_kl = _kl(mu, sd, mu_c, sd_c).mean(1)
            reg = omega * b_term + (1 - omega) * meta_kl
        else:
            meta_kl = torch.zeros(K, device=obs.device)
            reg = b_term if omega > 0 else torch.zeros(K, device=obs.device)
        lam = self.log_lam.detach().exp() if auto_lam else torch.full((K,), cfg.lam, device=obs.device)
        loss_k = (alpha[:, None] * logp - torch.minimum(q1, q2)).mean(1) + lam * reg
        self.actor_opt.zero_grad(set_to_none=True)
        loss_k.sum().backward()
        self.actor_opt.step()
        extra: dict[str, torch.Tensor] = {"lam": lam}
        if auto_lam:
            lam_loss = (-self.log_lam.exp() * (reg.detach() - cfg.lam_target)).sum()
            self.lam_opt.zero_grad(set_to_none=True)
            lam_loss.backward()
            self.lam_opt.step()
            with torch.no_grad():
                self.log_lam.clamp_(math.log(1e-3), math.log(1e4))
            extra["behaviour_kl"] = b_term.detach()
        ent_loss = -(self.log_alpha_ent[:, None] * (logp.detach() - self.act_dim)).mean(1).sum()
        self.alpha_opt.zero_grad(set_to_none=True)
        ent_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": loss_k.detach(), "behaviour_nll": behaviour.detach(), "meta_kl": meta_kl.detach(),
                "alpha_ent": alpha, "entropy": -logp.detach().mean(1), **extra}

    # -- write back ------------------------------------------------------------------------------
    def write_back(self, racs: Sequence[RAC]) -> None:
        """Copy parameters, optimizer moments, duals, buffers, step counts and random streams
        into K RACs (the ones it was built from share its generators already)."""
        K = self.K
        for k, r in enumerate(racs):
            self.actor.load_into(k, r.actor.net)
            self.critic.load_into(k, r.critic.q1)
            self.critic.load_into(K + k, r.critic.q2)
            self.critic_target.load_into(k, r.critic_target.q1)
            self.critic_target.load_into(K + k, r.critic_target.q2)
            with torch.no_grad():
                r.log_alpha_ent.copy_(self.log_alpha_ent[k])
                r.log_alpha_cql.copy_(self.log_alpha_cql[k])
                r.log_lam.copy_(self.log_lam[k])
            r.steps = self.steps[k]
            if r.generator is not self.generators[k]:
                r.generator.set_state(self.generators[k].get_state())
            if self.buffer:
                r.model_buffer.data = {n: v[k].clone() for n, v in self.buffer.items()}
        self._write_optimizer_states(racs)

    def _write_optimizer_states(self, racs: Sequence[RAC]) -> None:
        K = self.K
        for name, stacked_params, per_task in (
                ("actor_opt", list(self.actor.parameters()), [list(r.actor.net.parameters()) for r in racs]),
                ("critic_opt", list(self.critic.parameters()),
                 [list(r.critic.q1.parameters()) for r in racs] + [list(r.critic.q2.parameters()) for r in racs])):
            opt = getattr(self, name)
            n_layers = len(stacked_params) // 2
            for j, p in enumerate(stacked_params):
                st = opt.state.get(p)
                if not st:
                    continue
                is_w, layer = j < n_layers, j % n_layers
                for m, params in enumerate(per_task):
                    dst_opt = getattr(racs[m % K], name)
                    q = params[2 * layer + (0 if is_w else 1)]
                    dst_opt.state[q] = {"step": st["step"].clone(), **{
                        key: (st[key][m].t() if is_w else st[key][m, 0]).clone()
                        for key in ("exp_avg", "exp_avg_sq")}}
        for name, attr in (("alpha_opt", "log_alpha_ent"), ("cql_opt", "log_alpha_cql"), ("lam_opt", "log_lam")):
            st = getattr(self, name).state.get(getattr(self, attr))
            if st:
                for k, r in enumerate(racs):
                    getattr(r, name).state[getattr(r, attr)] = {
                        "step": st["step"].clone(), **{key: st[key][k].clone() for key in ("exp_avg", "exp_avg_sq")}}


def update_each(racs: Sequence[RAC], reals: Sequence[Batch], meta_actor: TanhGaussianActor | None = None,
                omega: float | None = None) -> list[dict[str, float]]:
    """The reference: K separate RAC.update calls (what meta-training ran before batching)."""
    return [r.update(b, meta_actor, omega) for r, b in zip(racs, reals, strict=True)]


def stack_batches(batches: Sequence[Batch]) -> Batch:
    return {n: torch.stack([b[n] for b in batches]) for n in batches[0]}

