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
    _tanh_log_prob,
    advantage_weights,
    gaussian_kl,
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
                x = F.elu(x, inplace=True)  # on baddbmm's fresh output: no copy; backward reads the result
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


def stats_to_floats(stats: dict[str, torch.Tensor], k: int | None = None) -> dict[str, float]:
    """The [K] statistics of an update as numbers (one host transfer): task k's, or the mean."""
    keys = list(stats)
    if not keys:
        return {}
    vals = torch.stack([stats[n].detach().float().reshape(-1) for n in keys]).cpu()
    col = vals.mean(1) if k is None else vals[:, k]
    return {n: float(v) for n, v in zip(keys, col.tolist(), strict=True)}


class StackedAdam:
    """Adam (torch.optim.Adam's single-tensor arithmetic, no weight decay) over stacked
    parameters whose leading dimension is a member, each member with its own step count:
    task learners picked a different number of times keep their own bias correction."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, steps: Sequence[torch.Tensor],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        # [M] per parameter, on its device (float64: bias corrections as torch computes them)
        self.steps = [s.to(device=p.device, dtype=torch.float64).clone() for s, p in zip(steps, self.params, strict=True)]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        for p, m, v, st in zip(self.params, self.exp_avg, self.exp_avg_sq, self.steps, strict=True):
            g = p.grad
            if g is None:
                continue
            st += 1
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            shape = (-1,) + (1,) * (p.dim() - 1)
            step_size = (self.lr / (1 - b1 ** st)).to(p.dtype).view(shape)
            bc2_sqrt = (1 - b2 ** st).sqrt().to(p.dtype).view(shape)
            denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
            p.sub_(step_size * m / denom)


def _adam_state(opt: torch.optim.Optimizer, p: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(step, exp_avg, exp_avg_sq) of p in a torch Adam; zeros before its first step."""
    st = opt.state.get(p)
    if not st:
        return 0.0, torch.zeros_like(p), torch.zeros_like(p)
    return float(st["step"]), st["exp_avg"], st["exp_avg_sq"]


def _set_adam_state(opt: torch.optim.Optimizer, p: torch.Tensor, step: float, m: torch.Tensor,
                    v: torch.Tensor) -> None:
    if step == 0:
        opt.state.pop(p, None)
        return
    opt.state[p] = {"step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": m.contiguous().clone(), "exp_avg_sq": v.contiguous().clone()}


class BatchedRAC:
    """K RAC learners (same sizes and config) updated together.

    Built from K `RAC`s, whose parameters, Adam moments and step counts and duals it copies in
    and `write_back` copies out; their generators and model buffers it shares (one random
    stream and one buffer per task, so refreshing a buffer or drawing noise needs no copy)."""

    def __init__(self, racs: Sequence[RAC]) -> None:
        r0 = racs[0]
        cfg = r0.cfg
        if any(r.cfg != cfg for r in racs):
            raise ValueError("task learners with different RAC configurations cannot be batched")
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
        self.actor_opt = self._adam(racs, "actor_opt", self.actor, [list(r.actor.net.parameters()) for r in racs],
                                    cfg.actor_lr)
        self.critic_opt = self._adam(racs, "critic_opt", self.critic,
                                     [list(r.critic.q1.parameters()) for r in racs]
                                     + [list(r.critic.q2.parameters()) for r in racs], cfg.critic_lr)
        self.alpha_opt = self._adam_scalar(racs, "alpha_opt", "log_alpha_ent", cfg.entropy_lr)
        self.cql_opt = self._adam_scalar(racs, "cql_opt", "log_alpha_cql", cfg.cql_alpha_lr)
        self.lam_opt = self._adam_scalar(racs, "lam_opt", "log_lam", cfg.lam_lr)
        self.behaviour: StackedMLP | None = None
        if any(r.behaviour_actor is not None for r in racs):
            if not all(r.behaviour_actor is not None for r in racs):
                raise ValueError("either every task learner has a behaviour policy (lam_target > 0) or none")
            self.behaviour = StackedMLP.from_sequentials(
                [r.behaviour_actor.net for r in racs if r.behaviour_actor is not None]).requires_grad_(False)
        self.generators = [r.generator for r in racs]  # shared: one random stream per task
        self.buffers = [r.model_buffer for r in racs]  # shared: one model buffer per task
        self.steps = [r.steps for r in racs]

    @classmethod
    def from_racs(cls, racs: Sequence[RAC]) -> BatchedRAC:
        return cls(racs)

    @classmethod
    def create(cls, obs_dim: int, act_dim: int, cfg: RACConfig, seeds: Sequence[int],
               device: str | torch.device = "cpu") -> BatchedRAC:
        """K fresh learners, task k initialised exactly as `RAC(..., seed=seeds[k])`."""
        return cls([RAC(obs_dim, act_dim, cfg, device, seed=s) for s in seeds])

    # -- optimizer state in and out --------------------------------------------------------------
    @staticmethod
    def _layer_param(params: Sequence[torch.Tensor], j: int, n_layers: int) -> tuple[torch.Tensor, bool]:
        """The per-task tensor behind stacked parameter j (ParameterList order: the weights,
        then the biases; nn.Sequential order: weight, bias per layer)."""
        is_w = j < n_layers
        return params[2 * (j % n_layers) + (0 if is_w else 1)], is_w

    def _adam(self, racs: Sequence[RAC], name: str, net: StackedMLP, per_member: Sequence[Sequence[torch.Tensor]],
              lr: float) -> StackedAdam:
        stacked = list(net.parameters())
        n_layers = len(stacked) // 2
        opt = StackedAdam(stacked, lr, [torch.zeros(len(per_member)) for _ in stacked])
        for j in range(len(stacked)):
            steps, ms, vs = [], [], []
            for m, params in enumerate(per_member):
                q, is_w = self._layer_param(params, j, n_layers)
                st, ea, eas = _adam_state(getattr(racs[m % self.K], name), q)
                steps.append(st)
                ms.append(ea.t() if is_w else ea[None])
                vs.append(eas.t() if is_w else eas[None])
            opt.steps[j] = torch.tensor(steps, dtype=torch.float64, device=stacked[j].device)
            opt.exp_avg[j] = torch.stack(ms).to(stacked[j]).contiguous()
            opt.exp_avg_sq[j] = torch.stack(vs).to(stacked[j]).contiguous()
        return opt

    def _adam_scalar(self, racs: Sequence[RAC], name: str, attr: str, lr: float) -> StackedAdam:
        p = getattr(self, attr)
        states = [_adam_state(getattr(r, name), getattr(r, attr)) for r in racs]
        opt = StackedAdam([p], lr, [torch.tensor([s[0] for s in states], dtype=torch.float64, device=p.device)])
        opt.exp_avg[0] = torch.stack([s[1] for s in states]).to(p)
        opt.exp_avg_sq[0] = torch.stack([s[2] for s in states]).to(p)
        return opt

    # -- back to per-task learners ---------------------------------------------------------------
    def write_back(self, racs: Sequence[RAC]) -> None:
        """Copy parameters, Adam moments and step counts, duals, step counts (and, for RACs
        it was not built from, model buffers and random streams) into K RACs."""
        K = self.K
        if len(racs) != K:
            raise ValueError(f"write_back needs {K} task learners, got {len(racs)}")
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
            if r.model_buffer is not self.buffers[k]:
                r.model_buffer.data = {n: v.clone() for n, v in self.buffers[k].data.items()}
        for name, opt, per_member in (
                ("actor_opt", self.actor_opt, [list(r.actor.net.parameters()) for r in racs]),
                ("critic_opt", self.critic_opt, [list(r.critic.q1.parameters()) for r in racs]
                 + [list(r.critic.q2.parameters()) for r in racs])):
            n_layers = len(opt.params) // 2
            for j in range(len(opt.params)):
                steps = opt.steps[j].tolist()  # one transfer per parameter
                for m, params in enumerate(per_member):
                    q, is_w = self._layer_param(params, j, n_layers)
                    ea, eas = opt.exp_avg[j][m], opt.exp_avg_sq[j][m]
                    _set_adam_state(getattr(racs[m % K], name), q, steps[m],
                                    ea.t() if is_w else ea[0], eas.t() if is_w else eas[0])
        for name, opt, attr in (("alpha_opt", self.alpha_opt, "log_alpha_ent"),
                                ("cql_opt", self.cql_opt, "log_alpha_cql"), ("lam_opt", self.lam_opt, "log_lam")):
            steps = opt.steps[0].tolist()
            for k, r in enumerate(racs):
                _set_adam_state(getattr(r, name), getattr(r, attr), steps[k], opt.exp_avg[0][k], opt.exp_avg_sq[0][k])

    # -- the per-task random streams and buffers -------------------------------------------------
    def _noise(self, n_real: int) -> dict[str, torch.Tensor]:
        """Every random number of one update, per task in the order RAC.update draws them."""
        cfg, A = self.cfg, self.act_dim
        lengths = [len(b) for b in self.buffers]
        if len(set(x > 0 for x in lengths)) > 1:
            raise ValueError("some task learners have model rollouts and some do not: refresh them together")
        b_model = cfg.batch_model if lengths[0] else 0
        b_cql = b_model or n_real
        if cfg.cql_states:
            b_cql = min(b_cql, cfg.cql_states)
        draws: dict[str, list[torch.Tensor]] = {n: [] for n in
                                                ("idx_c", "next", "uni", "cur", "nxt", "idx_a", "act")}
        for g, n_buf in zip(self.generators, lengths, strict=True):
            if n_buf:
                draws["idx_c"].append(torch.randint(n_buf, (b_model,), generator=g))
            draws["next"].append(torch.randn(n_real + b_model, A, generator=g))
            draws["uni"].append(torch.rand(b_cql * cfg.cql_n_actions, A, generator=g))
            draws["cur"].append(torch.randn(b_cql * cfg.cql_n_actions, A, generator=g))
            draws["nxt"].append(torch.randn(b_cql * cfg.cql_n_actions, A, generator=g))
            if n_buf:
                draws["idx_a"].append(torch.randint(n_buf, (b_model,), generator=g))
            draws["act"].append(torch.randn(n_real + b_model, A, generator=g))
        out = {n: torch.stack(v).to(self.device) for n, v in draws.items() if v and not n.startswith("idx")}
        out.update({n: v for n, v in draws.items() if v and n.startswith("idx")})  # type: ignore[misc]
        return out

    def _sample_buffers(self, idx: list[torch.Tensor], keys: Sequence[str]) -> Batch:
        rows = [{n: b.data[n][i.to(b.data[n].device)] for n in keys} for b, i in zip(self.buffers, idx, strict=True)]
        return {n: torch.stack([r[n] for r in rows]) for n in keys}

    # -- model rollouts --------------------------------------------------------------------------
    @torch.no_grad()
    def refresh_rollouts(self, start_obs: Sequence[torch.Tensor] | torch.Tensor, rollout_fns: Sequence[RolloutFn],
                         tasks: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """RAC.refresh_rollouts for tasks `tasks` (default: all): start_obs[i] [B, F] and
        rollout_fns[i] (its world-model slot) for the i-th of them; the imagined transitions
        go to each task's own buffer. Statistics are per refreshed task."""
        cfg = self.cfg
        which = list(range(self.K)) if tasks is None else list(tasks)
        model_rew, unc, raw = [], [], []
        for i, k in enumerate(which):
            g = self.generators[k]

            def policy(obs: torch.Tensor, k: int = k, g: torch.Generator = g) -> torch.Tensor:
                mu, sd = _dist(self.actor.forward_one(k, obs))
                eps = torch.randn(mu.shape, generator=g).to(mu)
                a = torch.tanh(mu + sd * eps)
                if cfg.rollout_noise:
                    a = a + cfg.rollout_noise * torch.randn(a.shape, generator=g).to(a)
                return a.clamp(-1, 1)

            out = rollout_fns[i](start_obs[i], policy)
            feat, act = out["feat"], out["action"]
            rew = out["reward"] - cfg.uncertainty_penalty * out["uncertainty"]
            H = act.shape[1]
            self.buffers[k].add({
                "obs": feat[:, :-1].reshape(-1, feat.shape[-1]), "act": act.reshape(-1, act.shape[-1]),
                "rew": rew.reshape(-1), "next_obs": feat[:, 1:].reshape(-1, feat.shape[-1]),
                "done": torch.zeros(feat.shape[0] * H, device=feat.device)})
            model_rew.append(out["reward"].mean())
            unc.append(out["uncertainty"].mean())
            if "raw_uncertainty" in out:  # the whole disagreement where the penalty acts on its excess
                raw.append(out["raw_uncertainty"].mean())
        stats = {"model_reward": torch.stack(model_rew), "uncertainty": torch.stack(unc)}
        if len(raw) == len(unc):
            stats["raw_uncertainty"] = torch.stack(raw)
        return stats

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

    def _q(self, net: StackedMLP, obs: torch.Tensor, act: torch.Tensor,
           frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads of every task: Q(obs, act), obs [K, N, F], act [K, N, A]. `frozen`:
        no gradient for the critic's weights (the actor step needs dQ/da only; RAC computes
        those weight gradients and the next critic step discards them)."""
        return self._q_segments(net, [(obs, act, 1)], frozen)

    def _q_segments(self, net: StackedMLP, segments: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
                    frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads of every task over row segments (states [K, R, F], actions [K, R*c, A],
        c): each state is evaluated under c actions, rows ordered (state, action). The first
        layer is split, W = [W_state; W_action], so its state part is computed once per
        distinct state (the conservative term evaluates each state under 3n actions) and
        broadcast; the other layers run once over all rows."""
        ws: list[torch.Tensor] = list(net.weights)
        bs: list[torch.Tensor] = list(net.biases)
        if frozen:
            ws, bs = [w.detach() for w in ws], [b.detach() for b in bs]
        w0, b0 = ws[0], bs[0]
        f = segments[0][0].shape[-1]
        w_s, w_a = w0[:, :f], w0[:, f:]
        M = w0.shape[0]
        parts = []
        for obs, act, c in segments:
            hs = torch.baddbmm(b0, torch.cat([obs, obs]), w_s)  # [2K, R, H]
            if c == 1:
                parts.append(torch.baddbmm(hs, torch.cat([act, act]), w_a))
                continue
            R, H = obs.shape[1], hs.shape[-1]
            ha = torch.bmm(torch.cat([act, act]), w_a).view(M, R, c, H)
            parts.append((ha + hs.view(M, R, 1, H)).view(M, R * c, H))  # backward: a contiguous sum
        h = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        for i in range(1, len(ws)):
            h = F.elu(h, inplace=True)
            h = torch.baddbmm(bs[i], h, ws[i])
        q = h.squeeze(-1)
        return q[: self.K], q[self.K:]

    def _critic_step(self, real: Batch, noise: dict) -> dict[str, torch.Tensor]:
        cfg, K, A = self.cfg, self.K, self.act_dim
        model = self._sample_buffers(noise["idx_c"], list(real)) if "idx_c" in noise else None
        n_real = real["obs"].shape[1]
        batch = real if model is None else {n: torch.cat([real[n], model[n]], 1) for n in real}
        s_model = (model or real)["obs"]
        s_next = (model or real)["next_obs"]
        if cfg.cql_states:
            s_model, s_next = s_model[:, : cfg.cql_states], s_next[:, : cfg.cql_states]
        n = cfg.cql_n_actions
        B = s_model.shape[1]
        alpha = self.log_alpha_ent.exp().detach()[:, None]
        with torch.no_grad():
            # one actor pass for the target's next actions and both sets of CQL actions, on each
            # distinct state once (the CQL states repeat n times: their mu and sd repeat with them)
            nb = batch["next_obs"].shape[1]
            mu, sd = _dist(self.actor(torch.cat([batch["next_obs"], s_model, s_next], 1)))
            mu = torch.cat([mu[:, :nb], mu[:, nb:].repeat_interleave(n, 1)], 1)
            sd = torch.cat([sd[:, :nb], sd[:, nb:].repeat_interleave(n, 1)], 1)
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
        # one critic pass (both heads, every task) over the Bellman rows, the CQL rows and the
        # data rows; the states: the batch's, the CQL states (each under 3n actions), the data's
        # CQL rows ordered (state, source, action): uniform, pi(s), pi(s') for each state
        nB, m = batch["obs"].shape[1], B * n
        cql_act = torch.stack([uni.view(K, B, n, A), a_cur.view(K, B, n, A), a_nxt.view(K, B, n, A)], 2)
        q1_all, q2_all = self._q_segments(self.critic, [
            (batch["obs"], batch["act"], 1), (s_model, cql_act.view(K, 3 * m, A), 3 * n),
            (real["obs"], real["act"], 1)])
        log_density = torch.stack([torch.full((K, B, n), -A * math.log(2.0), device=uni.device),
                                   logp_cur.view(K, B, n), logp_nxt.view(K, B, n)], 2).view(K, B, 3 * n)

        def split(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            cat = q[:, nB: nB + 3 * m].view(K, B, 3 * n) - log_density
            return q[:, :nB], torch.logsumexp(cat, 2).mean(1) - q[:, nB + 3 * m:].mean(1)

        q1, gap1 = split(q1_all)
        q2, gap2 = split(q2_all)
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
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        cql_loss = (-self.log_alpha_cql.exp() * (cql.detach() - cfg.cql_target)).sum()
        self.cql_opt.zero_grad()
        cql_loss.backward()
        self.cql_opt.step()
        return {"q": q1.detach().mean(1), "bellman": bellman.detach(), "conservative_gap": cql.detach(),
                "alpha_cql": alpha_cql.detach()}

    def _actor_step(self, real: Batch, noise: dict, meta_actor: TanhGaussianActor | None,
                    omega: float) -> dict[str, torch.Tensor]:
        cfg, K = self.cfg, self.K
        n_real = real["obs"].shape[1]
        obs = real["obs"] if "idx_a" not in noise else torch.cat(
            [real["obs"], self._sample_buffers(noise["idx_a"], ["obs"])["obs"]], 1)
        mu_all, sd_all = _dist(self.actor(obs))
        pre = mu_all + sd_all * noise["act"]
        a, logp = torch.tanh(pre), _tanh_log_prob(pre, mu_all, sd_all)
        q1, q2 = self._q(self.critic, obs, a, frozen=True)
        alpha = self.log_alpha_ent.exp().detach()
        mu, sd = mu_all[:, :n_real], sd_all[:, :n_real]  # the real rows: behaviour and meta terms
        data_act = real["act"].clamp(-1 + ACTION_EPS, 1 - ACTION_EPS)
        logp_data = _tanh_log_prob(torch.atanh(data_act), mu, sd)  # [K, n_real]
        behaviour = -logp_data.mean(1)  # [K]
        auto_lam = cfg.lam_target > 0
        use_meta = meta_actor is not None and omega < 1.0
        b_term = behaviour
        if cfg.behaviour_weight == "advantage" and not auto_lam:
            with torch.no_grad():
                qd1, qd2 = self._q(self.critic, real["obs"], real["act"], frozen=True)
                v = torch.minimum(q1, q2)[:, :n_real]
                w = advantage_weights(torch.minimum(qd1, qd2) - v, cfg.awr_beta, cfg.awr_max_weight)
            b_term = -(w * logp_data).mean(1)
        if auto_lam:
            if self.behaviour is None:
                raise RuntimeError("lambda by dual ascent (lam_target > 0) needs pi_beta: call "
                                   "RAC.set_behaviour_policy on each task learner before batching them")
            with torch.no_grad():
                mu_b, sd_b = _dist(self.behaviour(real["obs"]))
            b_term = gaussian_kl(mu, sd, mu_b, sd_b).mean(1)
        if use_meta:
            assert meta_actor is not None
            with torch.no_grad():
                mu_c, sd_c = meta_actor.dist_params(real["obs"].reshape(K * n_real, -1))
                mu_c, sd_c = mu_c.reshape(mu.shape), sd_c.reshape(sd.shape)
            meta_kl = gaussian_kl(mu, sd, mu_c, sd_c).mean(1)
            reg = omega * b_term + (1 - omega) * meta_kl
        else:
            meta_kl = torch.zeros(K, device=obs.device)
            reg = b_term if omega > 0 else torch.zeros(K, device=obs.device)
        lam = self.log_lam.detach().exp() if auto_lam else torch.full((K,), cfg.lam, device=obs.device)
        loss_k = (alpha[:, None] * logp - torch.minimum(q1, q2)).mean(1) + lam * reg
        self.actor_opt.zero_grad()
        loss_k.sum().backward()
        self.actor_opt.step()
        extra: dict[str, torch.Tensor] = {"lam": lam}
        if auto_lam:
            lam_loss = (-self.log_lam.exp() * (reg.detach() - cfg.lam_target)).sum()
            self.lam_opt.zero_grad()
            lam_loss.backward()
            self.lam_opt.step()
            with torch.no_grad():
                self.log_lam.clamp_(math.log(1e-3), math.log(1e4))
            extra["behaviour_kl"] = b_term.detach()
        ent_loss = -(self.log_alpha_ent[:, None] * (logp.detach() - self.act_dim)).mean(1).sum()
        self.alpha_opt.zero_grad()
        ent_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": loss_k.detach(), "behaviour_nll": behaviour.detach(), "meta_kl": meta_kl.detach(),
                "alpha_ent": alpha, "entropy": -logp.detach().mean(1), **extra}


# Activations above this size per batch leave the last-level cache on the 2-core CPU: measured
# with `vmerpo bench rac-speed`, the batched learner's task-updates/s fell at the cpu preset's
# sizes from 16 tasks (19 MiB of critic activations per layer) to 40 (47 MiB), and at the
# paper's sizes from 1 task (17 MiB) to 4 (69 MiB). On a GPU every task goes into one batch.
CPU_BATCH_BYTES = 24 * 2**20


def critic_rows(cfg: RACConfig) -> int:
    """Rows one task puts through the critic in a critic step (Bellman, conservative, data)."""
    cql_states = cfg.batch_model or cfg.batch_real
    if cfg.cql_states:
        cql_states = min(cql_states, cfg.cql_states)
    return cfg.batch_real + cfg.batch_model + 3 * cfg.cql_n_actions * cql_states + cfg.batch_real


def task_groups(n: int, cfg: RACConfig, device: str | torch.device = "cpu") -> list[list[int]]:
    """Split n task learners into batches: all together on a GPU; on a CPU as many as keep
    one layer's critic activations within CPU_BATCH_BYTES, in near-equal groups."""
    if n == 0:
        return []
    if torch.device(device).type != "cpu" or n == 1:
        return [list(range(n))]
    per_task = critic_rows(cfg) * 2 * cfg.hidden * 4
    size = max(1, CPU_BATCH_BYTES // per_task)
    groups = math.ceil(n / size)
    bounds = [round(i * n / groups) for i in range(groups + 1)]
    return [list(range(bounds[i], bounds[i + 1])) for i in range(groups)]


def stack_batches(batches: Sequence[Batch]) -> Batch:
    return {n: torch.stack([b[n] for b in batches]) for n in batches[0]}

