"""MerPO: model-based offline meta-RL with regularization (Lin et al., ICLR 2022; docs/algorithms.md
2c), on cached latents of the shared world model.

    [pi_c, pi_n <- behaviour cloning on the pooled logs       (warm_start_steps; 0 in MerPO)]
    for it in iterations:
        for step in steps_per_iteration:
            tasks = sample meta_batch
            for n in tasks:
                refresh model rollouts for task n from theta_n       (world-model slot of task n)
                repeat inner_steps: RAC step on task n (Q_n, pi_n), regularized towards pi_c
            pi_c <- pi_c - lr grad_{pi_c} mean_n lambda (1-omega) KL(pi_n || pi_c)   (first order)
            Q_meta <- (1 - 1e-3) Q_meta + 1e-3 mean_n Q_n                          (polyak)
              [or, meta_critic_steps > 0: Q_meta <- conservative TD steps for pi_c on the
               meta-batch tasks' real transitions (ours)]
    meta-test task j: theta_j adapted from phi; pi_j <- pi_c, Q_j <- Q_meta; RAC steps on D_j

Everything here works on latent transitions (s_t, a_t, r_t, s_{t+1}, d_t) made from a
`LatentCache`: actions scaled to [-1, 1] by the store's limits, rewards normalized by the
meta-training data's statistics, the model's uncertainty divided by its std on real data.

Under torchrun (`learning/distributed.py`) task n's learner lives on one rank and the tasks
of a meta-batch are run by their ranks; the pi_c gradient and Q_meta's mean of the task
critics are summed over ranks. Each task's samples in a meta-step come from a generator of
its own (seeded from the meta-batch draw and the task id), so the result does not depend on
the number of processes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from learning import distributed
from learning.batched_rac import BatchedRAC, stack_batches, stats_to_floats, task_groups
from learning.latents import LatentCache, rollout
from learning.rac import RAC, RACConfig, TanhGaussianActor, TwinCritic, gaussian_kl


@dataclass
class MerPOConfig:
    rac: RACConfig = field(default_factory=RACConfig)
    iterations: int = 500  # MerPO (a GPU budget; CPU presets are smaller and say so)
    steps_per_iteration: int = 100  # MerPO
    meta_batch: int = 4  # MerPO: tasks per meta-step
    inner_steps: int = 10  # MerPO: RAC steps per task and meta-step
    meta_actor_lr: float = 1e-3  # first-order pi_c step (MerPO lr)
    meta_q_polyak: float = 1e-3  # MerPO
    adapt_steps: int = 300  # MerPO: 100-500 RAC steps on the new task
    # Behaviour-cloning steps that start pi_c (and every task policy) as the pooled meta-train
    # logs' behaviour policy: 0 in MerPO (pi_c from scratch, 50k meta-steps); the CPU presets'
    # few hundred meta-steps leave a from-scratch pi_c near random, and the KL to it then pulls
    # every adapted policy away from the data [ours, measured: experiments/02-learning-benchmark-reach]
    warm_start_steps: int = 0
    # Critic steps per meta-step that fit Q_meta to pi_c itself (conservative TD on the meta-batch
    # tasks' real transitions, next actions from pi_c) instead of the polyak mean of the task
    # critics: 0 in MerPO. With the CPU budget's 200 meta-steps the polyak rate 1e-3 leaves Q_meta
    # 82 % its random init, and the adapted pair (pi_c, Q_meta) was never trained together
    # [ours, measured: experiments/07-adaptation-ablations]
    meta_critic_steps: int = 0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MerPOConfig:
        d = dict(d)
        rac = RACConfig(**d.pop("rac", {}))
        return cls(rac=rac, **d)


# -- data --------------------------------------------------------------------------------------
@dataclass
class Normalizer:
    """Scales shared by every task and method: reward mean/std (meta-train data), action
    limits, and the std of the model's uncertainty on real data."""

    action_low: np.ndarray
    action_high: np.ndarray
    reward_mean: float = 0.0
    reward_std: float = 1.0
    uncertainty_std: float = 1.0

    def to_unit(self, action):
        low, high = self._lh(action)
        return 2 * (action - low) / (high - low) - 1

    def to_robot(self, unit):
        low, high = self._lh(unit)
        return low + (unit + 1) * 0.5 * (high - low)

    def _lh(self, like):
        if torch.is_tensor(like):
            return (torch.as_tensor(self.action_low, dtype=like.dtype, device=like.device),
                    torch.as_tensor(self.action_high, dtype=like.dtype, device=like.device))
        return self.action_low, self.action_high

    def to_dict(self) -> dict:
        return {"action_low": [float(x) for x in self.action_low],
                "action_high": [float(x) for x in self.action_high],
                "reward_mean": self.reward_mean, "reward_std": self.reward_std,
                "uncertainty_std": self.uncertainty_std}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(np.asarray(d["action_low"], np.float32), np.asarray(d["action_high"], np.float32),
                   d["reward_mean"], d["reward_std"], d["uncertainty_std"])


def fit_normalizer(cache: LatentCache, action_low, action_high) -> Normalizer:
    r = cache.arrays["reward"]
    return Normalizer(np.asarray(action_low, np.float32), np.asarray(action_high, np.float32),
                      float(r.mean()), float(max(r.std(), 1e-6)))


def transitions(cache: LatentCache, norm: Normalizer, task: int | None = None,
                device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """(s_t, a_t, r_t, s_{t+1}, d_t) for every row that has a successor in its episode, and for
    an episode's last row when it is a true termination (d = 1: its s_{t+1} was never
    recorded, so the row's own s_t stands in; the target masks it out)."""
    ends = cache.episode_ends
    starts = np.concatenate([[0], ends[:-1]])
    term = np.asarray(cache.arrays["terminal"], bool)
    rows = []
    for e, (s, t_end) in enumerate(zip(starts, ends, strict=True)):
        if task is None or cache.episode_task[e] == task:
            rows.append(np.arange(s, t_end if term[t_end - 1] else t_end - 1))
    if not rows or not sum(len(r) for r in rows):
        raise ValueError(f"no transitions for task {task} in the latent cache")
    idx = np.concatenate(rows)
    nxt = np.where(np.isin(idx, ends - 1), idx, idx + 1)  # only terminal last rows are in idx
    a = cache.arrays
    act = np.clip(norm.to_unit(a["action"][idx]), -1.0, 1.0)
    out = {
        "obs": a["feat"][idx], "act": act,
        "rew": (a["reward"][idx] - norm.reward_mean) / norm.reward_std,
        "next_obs": a["feat"][nxt], "done": term[idx].astype(np.float32),
    }
    return {k: torch.as_tensor(np.asarray(v, np.float32), device=device) for k, v in out.items()}


def sample(data: dict[str, torch.Tensor], n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    idx = torch.randint(len(data["obs"]), (n,), generator=generator).to(data["obs"].device)
    return {k: v[idx] for k, v in data.items()}


def train_bc(actor: TanhGaussianActor, data: dict[str, torch.Tensor], steps: int, batch: int, lr: float,
             seed: int = 0, progress: Callable[[int, dict], None] | None = None) -> dict[str, float]:
    """Behaviour cloning: maximum likelihood of the logged (unit) actions under the actor."""
    opt = torch.optim.Adam(actor.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    nll = torch.zeros(())
    for i in range(steps):
        b = sample(data, batch, g)
        nll = -actor.log_prob(b["obs"], b["act"]).mean()
        opt.zero_grad(set_to_none=True)
        nll.backward()
        opt.step()
        if progress is not None:
            progress(i, {"behaviour_nll": float(nll.detach())})
    return {"behaviour_nll": float(nll.detach())}


def fit_behaviour_policy(data: dict[str, torch.Tensor], cfg: RACConfig, seed: int) -> TanhGaussianActor:
    """pi_beta for RAC's lambda by dual ascent (`lam_target` > 0): behaviour cloning of a
    task's transitions, `cfg.behaviour_fit_steps` steps (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        actor = TanhGaussianActor(data["obs"].shape[1], data["act"].shape[1], cfg.hidden, cfg.layers)
    actor = actor.to(data["obs"].device)
    train_bc(actor, data, cfg.behaviour_fit_steps, cfg.batch_real, cfg.actor_lr, seed=seed)
    return actor


def model_rollout_fn(world_model, slot: int, horizon: int, norm: Normalizer,
                     generator: torch.Generator) -> Callable:
    """RAC's rollout interface on the world model's task slot: unit actions in and out,
    normalized reward and uncertainty."""

    def fn(start_obs: torch.Tensor, policy_unit: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        out = rollout(world_model, start_obs, lambda feat, t: norm.to_robot(policy_unit(feat)),
                      horizon, generator, slot)
        return {"feat": out["feat"], "action": norm.to_unit(out["action"]).clamp(-1, 1),
                "reward": (out["reward"] - norm.reward_mean) / norm.reward_std,
                "uncertainty": out["uncertainty"] / norm.uncertainty_std}

    return fn


@torch.no_grad()
def uncertainty_std(world_model, data: dict[str, torch.Tensor], norm: Normalizer, slot: int,
                    generator: torch.Generator, n: int = 1024, feat_dim: int | None = None,
                    sample_z: bool = True) -> float:
    """Std of the model's uncertainty for dataset actions on real states (the penalty's unit);
    `feat_dim`: the latent's width where obs carries more (a task embedding), `sample_z` as
    `rollout`'s `sample`."""
    u = real_uncertainty(world_model, data, norm, slot, generator, n, feat_dim, sample_z)
    return float(max(u.std(), 1e-6))  # type: ignore[arg-type]  # Tensor | float


@torch.no_grad()
def real_uncertainty(world_model, data: dict[str, torch.Tensor], norm: Normalizer, slot: int,
                     generator: torch.Generator, n: int = 1024, feat_dim: int | None = None,
                     sample_z: bool = True) -> torch.Tensor:
    """The model's uncertainty u [n] for dataset actions on `n` random real states, one step
    (`uncertainty_std`'s sample)."""
    b = sample(data, n, generator)
    out = rollout(world_model, b["obs"][:, :feat_dim], lambda feat, t: norm.to_robot(b["act"]), 1, generator, slot,
                  sample=sample_z)
    return out["uncertainty"].reshape(-1)


# -- MerPO -------------------------------------------------------------------------------------
class MerPO:
    """Meta-policy pi_c and meta-critic Q_meta over per-task RAC learners."""

    def __init__(self, obs_dim: int, act_dim: int, tasks: list[int], cfg: MerPOConfig,
                 device: str | torch.device = "cpu", batched: bool = True) -> None:
        """`batched`: a meta-step's task learners update together as one `BatchedRAC` (the
        default; the same results as one after another, to float tolerance, several times
        faster: `vmerpo bench rac-speed`)."""
        self.cfg = cfg
        self.batched = batched
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        r = cfg.rac
        self.meta_actor = TanhGaussianActor(obs_dim, act_dim, r.hidden, r.layers).to(self.device)
        self.meta_critic = TwinCritic(obs_dim, act_dim, r.hidden, r.layers).to(self.device)
        self.meta_rac: RAC | None = None
        if cfg.meta_critic_steps:  # Q_meta as pi_c's own critic: a RAC whose actor *is* pi_c
            self.meta_rac = RAC(obs_dim, act_dim, r, self.device, seed=cfg.seed * 1000,
                                actor=self.meta_actor, critic=self.meta_critic)
        self.meta_opt = torch.optim.Adam(self.meta_actor.parameters(), lr=cfg.meta_actor_lr)
        self.tasks = list(tasks)
        self.learners: dict[int, RAC] = {}
        for n in self.tasks:
            rac = RAC(obs_dim, act_dim, r, self.device, seed=cfg.seed * 1000 + n + 1)
            rac.load_from(self.meta_actor, self.meta_critic)
            self.learners[n] = rac
        self.generator = torch.Generator().manual_seed(cfg.seed)  # draws the meta-batches only
        self.step = 0

    def warm_start(self, pooled: dict[str, torch.Tensor], steps: int | None = None) -> dict[str, float]:
        """pi_c <- behaviour cloning on the pooled meta-train transitions; every task policy
        starts from it (`warm_start_steps`; before the first meta-step, identically on every
        rank)."""
        r = self.cfg.rac
        n = self.cfg.warm_start_steps if steps is None else steps
        stats = train_bc(self.meta_actor, pooled, n, r.batch_real, r.actor_lr, seed=self.cfg.seed + 11)
        for rac in self.learners.values():
            rac.actor.load_state_dict(self.meta_actor.state_dict())
        return stats

    def owns(self, task: int) -> bool:
        """Whether this process runs task `task`'s learner (always, outside torchrun)."""
        ctx = distributed.current()
        return distributed.owner(self.tasks.index(task), ctx.world_size) == ctx.rank

    def meta_step(self, data: dict[int, dict[str, torch.Tensor]],
                  rollout_fns: dict[int, Callable] | None) -> dict[str, float]:
        cfg, r = self.cfg, self.cfg.rac
        pick = torch.randperm(len(self.tasks), generator=self.generator)[: cfg.meta_batch].tolist()
        batch_tasks = [self.tasks[i] for i in pick]
        mine = [n for n in batch_tasks if self.owns(n)]  # all of them in one process
        key = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))  # same on every rank
        gens = {n: torch.Generator().manual_seed(distributed.shard_seed(key, n)) for n in mine}
        stats: dict[str, list[float]] = {}
        for n in mine:
            rac = self.learners[n]
            if r.lam_target > 0 and rac.behaviour_actor is None:  # pi_beta of task n, once
                rac.set_behaviour_policy(fit_behaviour_policy(data[n], r, seed=cfg.seed * 1000 + n + 7))
        if self.batched and mine:
            stats = self._inner_loop_batched(mine, data, rollout_fns, gens)
        for n in mine if not self.batched else []:
            rac, g = self.learners[n], gens[n]
            for _ in range(cfg.inner_steps):
                if rollout_fns is not None and rac.steps % r.rollout_every == 0:
                    starts = sample(data[n], r.rollout_batch, g)["obs"]
                    for k, v in rac.refresh_rollouts(starts, rollout_fns[n]).items():
                        stats.setdefault(k, []).append(v)
                for k, v in rac.update(sample(data[n], r.batch_real, g), self.meta_actor).items():
                    stats.setdefault(k, []).append(v)
        # first-order meta-policy step: pi_c towards the task policies on their own states
        kl = []
        for n in mine:
            obs = sample(data[n], r.batch_real, gens[n])["obs"]
            with torch.no_grad():
                mu_n, sd_n = self.learners[n].actor.dist_params(obs)
            mu_c, sd_c = self.meta_actor.dist_params(obs)
            kl.append(gaussian_kl(mu_n, sd_n, mu_c, sd_c).mean())
        kl_sum = torch.stack(kl).sum() if kl else torch.zeros((), device=self.device)
        if r.lam_target > 0:  # each task's KL weighted by its own dual-ascended lambda
            lam_kl = sum(self.learners[n].lam * k for n, k in zip(mine, kl, strict=True))
            meta_loss = (1 - r.omega) * lam_kl / len(batch_tasks)
        else:
            meta_loss = r.lam * (1 - r.omega) * kl_sum / len(batch_tasks)
        if r.omega < 1.0:
            self.meta_opt.zero_grad(set_to_none=True)
            if kl:
                assert isinstance(meta_loss, torch.Tensor)  # a sum of the KL tensors
                meta_loss.backward()
            distributed.all_reduce_grads_(self.meta_actor.parameters())  # sum over ranks' tasks
            self.meta_opt.step()
        kl_total = distributed.all_reduce_(kl_sum.detach().clone())
        if self.meta_rac is not None:
            # Q_meta <- pi_c's conservative critic, on every rank alike (same batches: the
            # meta-batch draw's key; every rank holds every task's data)
            g = torch.Generator().manual_seed(distributed.shard_seed(key, self.step, 0))
            per = max(1, r.batch_real // len(batch_tasks))
            for _ in range(cfg.meta_critic_steps):
                parts = [sample(data[n], per, g) for n in batch_tasks]
                real = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
                for k, v in self.meta_rac.critic_step(real).items():
                    stats.setdefault(f"meta_{k}", []).append(v)
        else:
            self._polyak_meta_critic(mine, len(batch_tasks))
        self.step += 1
        merged: dict[str, list[float]] = {}
        for part in distributed.all_gather_objects(stats):
            for k, vals in part.items():
                merged.setdefault(k, []).extend(vals)
        out = {k: float(np.mean(v)) for k, v in merged.items()}
        out["meta_kl"] = float(kl_total) / len(batch_tasks)
        return out

    def _inner_loop_batched(self, mine: list[int], data: dict[int, dict[str, torch.Tensor]],
                            rollout_fns: dict[int, Callable] | None,
                            gens: dict[int, torch.Generator]) -> dict[str, list[float]]:
        """The meta-batch's inner RAC steps as one BatchedRAC: each task draws from its own
        generators in the order the per-task loop does, so the results are the loop's."""
        r = self.cfg.rac
        parts: dict[str, list[torch.Tensor]] = {}
        for group in task_groups(len(mine), r, self.device):  # one group unless the CPU's cache says otherwise
            tasks = [mine[i] for i in group]
            learners = [self.learners[n] for n in tasks]
            batched = BatchedRAC.from_racs(learners)
            for _ in range(self.cfg.inner_steps):
                due = [i for i, s in enumerate(batched.steps)
                       if rollout_fns is not None and s % r.rollout_every == 0]
                if due:
                    assert rollout_fns is not None  # due is empty without them
                    starts = [sample(data[tasks[i]], r.rollout_batch, gens[tasks[i]])["obs"] for i in due]
                    for k, v in batched.refresh_rollouts(starts, [rollout_fns[tasks[i]] for i in due], due).items():
                        parts.setdefault(k, []).append(v)
                real = stack_batches([sample(data[n], r.batch_real, gens[n]) for n in tasks])
                for k, v in batched.update(real, self.meta_actor).items():
                    parts.setdefault(k, []).append(v)
            batched.write_back(learners)
        # one host transfer for the statistics of every task and inner step
        keys = list(parts)
        flat = [torch.cat([t.reshape(-1).float() for t in parts[k]]) for k in keys]
        values = torch.cat(flat).cpu().tolist() if flat else []
        out, i = {}, 0
        for k, f in zip(keys, flat, strict=True):
            out[k] = values[i: i + len(f)]
            i += len(f)
        return out

    def _polyak_meta_critic(self, mine: list[int], n_tasks: int) -> None:
        """Q_meta <- polyak towards the mean of the task critics (summed over ranks)."""
        cfg = self.cfg
        with torch.no_grad():
            params = list(self.meta_critic.parameters())
            total = torch.zeros(sum(p.numel() for p in params), device=self.device)
            for n in mine:
                total += torch.nn.utils.parameters_to_vector(self.learners[n].critic.parameters())
            distributed.all_reduce_(total)
            meta = torch.nn.utils.parameters_to_vector(params).lerp_(total / n_tasks, cfg.meta_q_polyak)
            torch.nn.utils.vector_to_parameters(meta, params)

    def adapt(self, data: dict[str, torch.Tensor], rollout_fn: Callable | None, steps: int | None = None,
              seed: int = 0, progress: Callable[[int, dict], None] | None = None) -> RAC:
        """Meta-test: pi_j <- pi_c, Q_j <- Q_meta, then RAC steps on the new task's data,
        still regularized towards pi_c."""
        return adapt_rac(self.meta_actor, self.meta_critic, data, rollout_fn, self.cfg.rac,
                         self.cfg.adapt_steps if steps is None else steps, seed, progress)

    def state_dict(self) -> dict:
        return {"meta_actor": self.meta_actor.state_dict(), "meta_critic": self.meta_critic.state_dict(),
                "meta_opt": self.meta_opt.state_dict(), "generator": self.generator.get_state(),
                "step": torch.tensor(self.step),
                "learners": {str(n): rac.state_dict() for n, rac in self.learners.items()},
                "model_buffers": {str(n): dict(rac.model_buffer.data) for n, rac in self.learners.items()},
                **({"meta_rac": self.meta_rac.state_dict()} if self.meta_rac is not None else {})}

    def gathered_state_dict(self) -> dict | None:
        """`state_dict()` with every learner as its owner has it, on rank 0 (None on the
        others); a collective: every rank calls it."""
        if not distributed.current().enabled:
            return self.state_dict()
        mine = [str(n) for n in self.tasks if self.owns(n)]
        sd = self.state_dict()
        parts = distributed.gather_to_main({k: {n: sd[k][n] for n in mine} for k in ("learners", "model_buffers")})
        if parts is None:
            return None
        for part in parts:
            for k, learners in part.items():
                sd[k].update(learners)
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.meta_actor.load_state_dict(sd["meta_actor"])
        self.meta_critic.load_state_dict(sd["meta_critic"])
        self.meta_opt.load_state_dict(sd["meta_opt"])
        self.generator.set_state(sd["generator"].cpu())  # a CPU generator; map_location may have moved it
        self.step = int(sd["step"])
        if self.meta_rac is not None:
            self.meta_rac.load_state_dict(sd["meta_rac"])
        for n, rac in self.learners.items():
            rac.load_state_dict(sd["learners"][str(n)])
            rac.model_buffer.data = dict(sd["model_buffers"][str(n)])


def adapt_rac(init_actor: TanhGaussianActor | None, init_critic: TwinCritic | None,
              data: dict[str, torch.Tensor], rollout_fn: Callable | None, cfg: RACConfig, steps: int,
              seed: int = 0, progress: Callable[[int, dict], None] | None = None,
              meta_actor: TanhGaussianActor | None = None) -> RAC:
    """RAC on one task's data, initialised from (init_actor, init_critic) when given and
    regularized towards `meta_actor` (default: init_actor, frozen)."""
    return adapt_racs(init_actor, init_critic, [data], None if rollout_fn is None else [rollout_fn], cfg, steps,
                      [seed], progress, meta_actor)[0]


def adapt_racs(init_actor: TanhGaussianActor | None, init_critic: TwinCritic | None,
               datas: Sequence[dict[str, torch.Tensor]], rollout_fns: Sequence[Callable] | None, cfg: RACConfig,
               steps: int, seeds: Sequence[int], progress: Callable[[int, dict], None] | None = None,
               meta_actor: TanhGaussianActor | None = None) -> list[RAC]:
    """`adapt_rac` on several independent logs at once (one learner per log, all from the same
    start): each learner k is what `adapt_rac(..., datas[k], ..., seed=seeds[k])` returns, to
    float tolerance, run as batched learners (`learning.batched_rac`) in groups that fit the
    CPU's cache. `progress` is told about the first group's steps."""
    if len(datas) != len(seeds) or (rollout_fns is not None and len(rollout_fns) != len(datas)):
        raise ValueError(f"{len(datas)} logs, {len(seeds)} seeds"
                         + ("" if rollout_fns is None else f", {len(rollout_fns)} rollout functions"))
    obs_dim, act_dim = datas[0]["obs"].shape[1], datas[0]["act"].shape[1]
    device = datas[0]["obs"].device
    anchor = meta_actor if meta_actor is not None else (
        copy.deepcopy(init_actor).requires_grad_(False) if init_actor is not None else None)
    racs = []
    for data, seed in zip(datas, seeds, strict=True):
        rac = RAC(obs_dim, act_dim, cfg, device, seed=seed)
        if init_actor is not None and init_critic is not None:
            rac.load_from(init_actor, init_critic)
        if cfg.lam_target > 0:
            rac.set_behaviour_policy(fit_behaviour_policy(data, cfg, seed=seed + 7))
        racs.append(rac)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    # the batched learner: the same update as RAC.update (to float tolerance) in fewer, larger
    # kernels (one actor and one critic pass per step for every learner of a group)
    for gi, group in enumerate(task_groups(len(racs), cfg, device)):
        members = [racs[k] for k in group]
        batched = BatchedRAC.from_racs(members)
        for i in range(steps):
            if rollout_fns is not None and i % cfg.rollout_every == 0:
                batched.refresh_rollouts([sample(datas[k], cfg.rollout_batch, gens[k])["obs"] for k in group],
                                         [rollout_fns[k] for k in group])
            stats = batched.update(stack_batches([sample(datas[k], cfg.batch_real, gens[k]) for k in group]),
                                   anchor)
            if progress is not None and gi == 0:  # numbers cost a device sync: on a GPU every 100 steps
                host = device.type == "cpu" or i % 100 == 0 or i == steps - 1
                progress(i, stats_to_floats(stats, 0) if host else {})
        batched.write_back(members)
    return racs


# -- MerPO-Adp -----------------------------------------------------------------------------------
@torch.no_grad()
def adaptive_omega(world_model, cache: LatentCache, meta_actor: TanhGaussianActor, norm: Normalizer,
                   omega: float, generator: torch.Generator, slot: int = 0, repeats: int = 8,
                   z_full: float = 2.0, uncertainty_penalty: float = 1.0,
                   max_horizon: int = 500) -> dict[str, float]:
    """MerPO-Adp: omega_j for a new task from how the meta-policy compares with the behaviour
    policy *on that task*, both measured in the task-adapted model theta_j (`slot`).

    From every episode start of the task's log, `repeats` imagined episodes (a random prior
    member per step) with the logged actions replayed (the behaviour policy) and with pi_c's
    mean action, as long as the shortest episode, the two with the same random draws (so equal
    policies give d = 0). Each imagined return is pessimistic, as in MOPO/LOMPO:
    sum_t r_t - uncertainty_penalty * reward_std * u_t / u_std (u: the model's latent
    uncertainty, `u_std` its std on real data), because a policy that leaves the data is
    scored where the model is least reliable. d = R_b - R_c per start and draw and
    z = mean(d) / stderr(d). Evidence that pi_c is worse here (z > 0) moves omega towards 1 (stay
    with the data), evidence that it is better moves it towards 0, reaching the end at
    |z| = z_full:

        omega_j = omega + (1 - omega) min(z / z_full, 1)     z >= 0
        omega_j = omega (1 - min(-z / z_full, 1))            z <  0

    [ours] MerPO's theory bounds the RAC policy's improvement over both regularizers, and the
    MerPO paper names MerPO-Adp (omega per task) without fixing a rule; ours uses the adapted
    model that MerPO already has. Measured on the learning benchmark's reach runs: replaying
    the logged actions in theta_j gives the logs' real returns to within ~10 % over whole
    episodes, pi_c's rollouts carry 1.0-1.9x the uncertainty of the replays, and pi_c scores
    below the logged actions on held-out tasks (it is one policy for the meta-train goals),
    which is where omega = 1 beat 0.4 (experiments/02-learning-benchmark-reach).
    """
    ends = np.asarray(cache.episode_ends)
    starts = np.concatenate([[0], ends[:-1]])
    horizon = int(min((ends - starts).min() - 1, max_horizon))
    if horizon < 1:
        raise ValueError("MerPO-Adp needs episodes of at least 2 steps in the task's log")
    a = cache.arrays
    idx = np.repeat(starts, repeats)
    dev = next(meta_actor.parameters()).device
    feat = torch.as_tensor(np.asarray(a["feat"][idx], np.float32), device=dev)
    logged = torch.as_tensor(np.stack([a["action"][idx + k] for k in range(horizon)], 1).astype(np.float32),
                             device=dev)
    crn = generator.get_state()  # common random numbers: both see the same members and noise
    out_b = rollout(world_model, feat, lambda f, t: logged[:, t], horizon, generator, slot)
    generator.set_state(crn)
    out_c = rollout(world_model, feat, lambda f, t: norm.to_robot(meta_actor.mean_unit(f)), horizon,
                    generator, slot)
    scale = uncertainty_penalty * norm.reward_std / norm.uncertainty_std

    def pessimistic(out):
        return (out["reward"] - scale * out["uncertainty"]).sum(1)

    d = (pessimistic(out_b) - pessimistic(out_c)).double()
    z = float(d.mean() / (d.std() / math.sqrt(len(d)) + 1e-9)) if len(d) > 1 else 0.0
    if z >= 0:
        w = omega + (1 - omega) * min(z / z_full, 1.0)
    else:
        w = omega * (1 - min(-z / z_full, 1.0))
    return {"omega": float(w), "omega_base": float(omega), "z": z, "horizon": horizon, "rollouts": len(d),
            "uncertainty_penalty": float(uncertainty_penalty),
            "behaviour_return": float(out_b["reward"].sum(1).mean()),
            "meta_policy_return": float(out_c["reward"].sum(1).mean()),
            "behaviour_pessimistic_return": float(pessimistic(out_b).mean()),
            "meta_policy_pessimistic_return": float(pessimistic(out_c).mean()),
            "behaviour_uncertainty": float(out_b["uncertainty"].mean() / norm.uncertainty_std),
            "meta_policy_uncertainty": float(out_c["uncertainty"].mean() / norm.uncertainty_std)}
