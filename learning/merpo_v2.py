"""MerPO v2: a meta-model that infers the task, a task-conditioned meta-policy, and a behaviour
term that constrains without copying the data (docs/algorithms.md, "MerPO v2").

    meta-train (tasks n = 1..N, each with its log D_n)
      task embedding   r_hat(s, a, s', e_n) and one e_n per task (learning.task_embedding)
      e_n for training the policies: inferred from D_n itself, as a new task's will be (each
                       row gets one member of the bootstrap posterior, so the policies learn
                       with the inference's own noise)
      pi_c, Q_meta     one conditioned RAC learner on [s, e] over every task's transitions:
                       behaviour cloning warm start, then `meta_steps` RAC updates with the
                       advantage-weighted behaviour term (omega = 1: pi_c is its own anchor)
      imagination      with a world model (latents, the pixel track and `vmerpo train`): the
                       learners also train on imagined transitions, `horizon` steps of the prior
                       ensemble from real rows under the current policy, each step from a random
                       member's mean (a mode, as the real rows' latents are), rewarded by the
                       task's reward head r_hat(s, a, s', e) and penalised by lambda_u times the
                       members' disagreement in units of its std on real data (LOMPO/MOPO)
    meta-test (task j, its small log D_j)
      e_j              inferred from D_j's rewards, the head frozen; constant rewards: the
                       mean embedding (the meta-policy's average task), said in one line
      meta-policy      pi_c(s, e_j), zero-shot
      MerPO            pi_j <- pi_c, Q_j <- Q_meta; RAC on D_j conditioned on e_j, regularized
                       by omega B + (1 - omega) KL(pi_j || pi_c(., e_j)); with the solved-log
                       start rule, a log whose every episode succeeded is cloned by fresh
                       networks instead (`choose_learner`)

What v1 did instead, and the measurement that replaced it (state track, reach medium, 4
held-out tasks, experiments/18-merpo-v2): v1's policies saw no task variable, and its pi_c
was the first-order average of per-task learners; conditioned on the inferred embedding and
trained as one learner on the pooled tasks, pi_c solves 0.91 of held-out episodes zero-shot
with the advantage-weighted behaviour term and 0.29 with v1's plain likelihood term (lambda 50),
the same learner otherwise. Per-task learners are not needed once the policy knows the task:
pi_c's one learner sees every task's transitions in each update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from learning.latents import rollout
from learning.merpo import Normalizer, adapt_racs, real_uncertainty, train_bc
from learning.rac import RAC, RACConfig, RolloutFn, TanhGaussianActor, TwinCritic
from learning.task_embedding import (
    Inference,
    NoTaskSignal,
    TaskEmbedding,
    TaskEmbeddingConfig,
    condition,
)

VERSION = 2


OMEGA_RULES = ("fixed", "solved-log")
START_RULES = ("meta", "solved-log")


@dataclass
class MerPOv2Config:
    # horizon and uncertainty_penalty act only with a world model (imagined transitions):
    # LOMPO's horizon 5, MOPO's lambda_u 1 on the std-normalised disagreement [ours: to be measured]
    rac: RACConfig = field(default_factory=lambda: RACConfig(behaviour_weight="advantage", horizon=5,
                                                             uncertainty_penalty=1.0))
    embedding: TaskEmbeddingConfig = field(default_factory=TaskEmbeddingConfig)
    use_embedding: bool = True  # False: the ablation without a task variable (v1's blind policies)
    warm_start_steps: int = 2000  # behaviour cloning of the pooled logs before RAC
    meta_steps: int = 3000  # RAC updates of (pi_c, Q_meta) on the pooled conditioned logs
    adapt_steps: int = 500  # RAC updates on a new task's log
    omega: float = 0.4  # MerPO's weight of the behaviour term against the meta-policy at meta-test
    # how a new task's omega is chosen (`choose_omega`): "fixed" (always `omega`) or "solved-log"
    # (0, the meta-policy leads, unless every episode of the task's log succeeded; then `omega`)
    omega_rule: str = "fixed"
    # where a new task's learner starts (`choose_start`): "meta" (always (pi_c, Q_meta)) or
    # "solved-log" (when every episode of the task's log succeeded, fresh networks clone the log;
    # otherwise from (pi_c, Q_meta)). On latents (the pixel presets: `merpo_train.preset`) a pi_c
    # meta-trained on solved logs is no start (reach expert: 0.08 from it); on states it is
    # (0.96 from it, 0.79 cloned): docs/algorithms.md 5b, experiments/35-start-rule
    start_rule: str = "meta"
    # a learner from scratch clones its log for `scratch_bc_steps` steps (`vmerpo adapt` sets the
    # single-task BC baseline's count: the run's `merpo.adapt_steps` or --steps), then takes
    # `scratch_rac_steps` RAC updates with the behaviour term alone (omega 1). 0 RAC updates:
    # measured, RAC after the clone lost to the clone alone (state expert: 0.76 vs 0.79)
    scratch_bc_steps: int = 1000
    scratch_rac_steps: int = 0
    # > 0: each meta-train task's embedding for the policies is inferred from this many random
    # subsets of `train_inference_episodes` of its episodes (a new task's log size), so that the
    # policies train with the spread a new task's inference has; 0: from the task's whole log
    # [ours; an option until measured]
    train_inference_draws: int = 0
    train_inference_episodes: int = 5
    # with a world model: train on imagined transitions too (False: real rows only, an ablation)
    imagine: bool = True
    # which disagreement the penalty acts on: 0 all of it (MOPO/LOMPO: u over its std on real
    # rows); q in (0, 1) only its excess over the real rows' q-quantile, so imagined transitions
    # as certain as the logged ones cost nothing [ours; an option until measured]
    uncertainty_quantile: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.omega_rule not in OMEGA_RULES:
            raise ValueError(f"merpo_v2.omega_rule {self.omega_rule!r}: choose one of {', '.join(OMEGA_RULES)}")
        if self.start_rule not in START_RULES:
            raise ValueError(f"merpo_v2.start_rule {self.start_rule!r}: choose one of {', '.join(START_RULES)}")
        if not 0.0 <= self.uncertainty_quantile < 1.0:
            raise ValueError(f"merpo_v2.uncertainty_quantile {self.uncertainty_quantile}: must be in [0, 1) "
                             "(0: penalise all of the disagreement)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MerPOv2Config:
        d = dict(d)
        base = cls()  # a partial dict is read over the defaults (the advantage-weighted term included)
        return cls(rac=dataclasses.replace(base.rac, **d.pop("rac", {})),
                   embedding=dataclasses.replace(base.embedding, **d.pop("embedding", {})), **d)


def choose_omega(cfg: MerPOv2Config, log_success: float | None) -> tuple[float, str]:
    """A new task's omega under `cfg.omega_rule`, and why, in words. "solved-log": when the
    task's own log already solves it (every episode succeeded) the behaviour term keeps its
    weight (`cfg.omega`); otherwise omega 0, the meta-policy at the inferred task leads. A log
    that records no success falls back to `cfg.omega`."""
    if cfg.omega_rule == "fixed":
        return cfg.omega, f"omega {cfg.omega} (fixed)"
    if log_success is None:
        return cfg.omega, (f"omega {cfg.omega}: the log records no episode success, so the solved-log rule "
                           "cannot choose")
    if log_success >= 1.0:
        return cfg.omega, f"omega {cfg.omega}: every episode of the log succeeded (the data lead)"
    return 0.0, f"omega 0: {log_success:.0%} of the log's episodes succeeded (the meta-policy leads)"


def choose_start(cfg: MerPOv2Config, log_success: float | None) -> tuple[str, str]:
    """Where a new task's learner starts under `cfg.start_rule`, and why, in words: "meta"
    (pi_c and Q_meta, regularized towards pi_c by omega) or "scratch" (fresh networks that
    clone the log, `scratch_bc_steps`, then `scratch_rac_steps` RAC updates at omega 1).
    "solved-log" starts from scratch when every episode of the task's log succeeded: the data
    then show how to solve the task, and a meta-policy learned from such logs need not know the
    task (experiments/33: meta-trained on expert logs, pi_c solves 0.03 of held-out pixel
    episodes), so its start and pull are dropped."""
    if cfg.start_rule == "meta":
        return "meta", "from (pi_c, Q_meta)"
    if log_success is None:
        return "meta", "from (pi_c, Q_meta): the log records no episode success, so the solved-log start rule cannot choose"
    if log_success >= 1.0:
        return "scratch", (f"from scratch ({cfg.scratch_bc_steps} behaviour-cloning steps on the log"
                           + (f", then {cfg.scratch_rac_steps} RAC updates at omega 1" if cfg.scratch_rac_steps else "")
                           + "): every episode of the log succeeded, so the data lead and the meta-policy is not used")
    return "meta", f"from (pi_c, Q_meta): {log_success:.0%} of the log's episodes succeeded"


def choose_learner(cfg: MerPOv2Config, log_success: float | None) -> tuple[str, float, str]:
    """A new task's learner: (start, omega, why) from `choose_start` and `choose_omega`; a
    learner from scratch has no meta-policy to pull towards, so its omega is 1."""
    start, why_start = choose_start(cfg, log_success)
    if start == "scratch":
        return start, 1.0, why_start
    omega, why_omega = choose_omega(cfg, log_success)
    return start, omega, f"{why_start}, {why_omega}"


@dataclass
class TaskInference:
    """What a new task's log says about the task: its embedding `z` (standardised), the
    posterior's members and spread, and `fallback` (why the mean embedding stands in), if any."""

    z: np.ndarray
    std: np.ndarray
    members: np.ndarray
    reward_mse: float | None
    fallback: str | None = None
    evidence: float | None = None  # `task_embedding.Inference.evidence`: how well z predicts unseen episodes


class Imagination:
    """The world model's prior ensemble as MerPO v2's learners imagine with it: `horizon` steps
    from real latent rows under the learner's policy (unit actions), each step a random member's
    mean; the reward from the task embedding's head at the row's embedding (or, without an
    embedding, the world model's phi reward head), the disagreement of the members (LOMPO's u)
    divided by its std on real rows with the logged actions (`calibrate`). The penalised
    uncertainty is that, less `uncertainty_reference` (0 unless calibrated with a quantile),
    floored at 0; the rollout also returns the whole normalised disagreement (`raw_uncertainty`)."""

    def __init__(self, world_model, norm: Normalizer, feat_dim: int, horizon: int,
                 uncertainty_std: float | None = None) -> None:
        self.world_model = world_model.eval().requires_grad_(False)
        self.norm = norm
        self.feat_dim = feat_dim
        self.horizon = horizon
        self.uncertainty_std = uncertainty_std
        self.uncertainty_reference = 0.0  # set by calibrate (with a quantile) or MerPOv2.attach
        self.real_uncertainty_mean: float | None = None  # u on real rows in the unit (calibrate)

    @torch.no_grad()
    def calibrate(self, data: dict[str, torch.Tensor], seed: int = 0, n: int = 2048,
                  quantile: float = 0.0) -> float:
        """The std of u on real rows (their logged actions, one step): the penalty's unit; with
        `quantile` > 0 also the reference below which u costs nothing: that quantile of the real
        rows' u, in the unit."""
        u = real_uncertainty(self.world_model, data, self.norm, 0, torch.Generator().manual_seed(seed), n,
                             feat_dim=self.feat_dim, sample_z=False)
        self.uncertainty_std = max(float(u.std()), 1e-6)
        self.real_uncertainty_mean = float(u.mean()) / self.uncertainty_std
        self.uncertainty_reference = float(torch.quantile(u, quantile)) / self.uncertainty_std if quantile > 0 else 0.0
        return self.uncertainty_std

    def rollout_fn(self, embedding: TaskEmbedding | None, generator: torch.Generator) -> RolloutFn:
        """RAC's rollout interface on conditioned rows: obs = [latent, z] (z standardised)."""
        if self.uncertainty_std is None:
            raise RuntimeError("Imagination.calibrate before rolling out")
        F, norm, ustd, ref = self.feat_dim, self.norm, self.uncertainty_std, self.uncertainty_reference

        def fn(start_obs: torch.Tensor, policy_unit: Callable[[torch.Tensor], torch.Tensor]) -> dict:
            feat, z = start_obs[:, :F], start_obs[:, F:]
            out = rollout(self.world_model, feat, lambda f, t: norm.to_robot(policy_unit(torch.cat([f, z], -1))),
                          self.horizon, generator, 0, sample=False)
            feats, act = out["feat"], norm.to_unit(out["action"]).clamp(-1, 1)
            B, H = act.shape[:2]
            if embedding is not None:
                e = embedding.raw(z).repeat_interleave(H, 0)
                reward = embedding.reward(feats[:, :-1].reshape(B * H, F), act.reshape(B * H, -1),
                                          feats[:, 1:].reshape(B * H, F), e).reshape(B, H)
            else:
                reward = (out["reward"] - norm.reward_mean) / norm.reward_std
            u = out["uncertainty"] / ustd
            return {"feat": torch.cat([feats, z[:, None].expand(B, H + 1, z.shape[-1])], -1), "action": act,
                    "reward": reward, "uncertainty": (u - ref).clamp_min(0) if ref else u, "raw_uncertainty": u}

        return fn


class MerPOv2:
    def __init__(self, obs_dim: int, act_dim: int, tasks: Sequence[int], cfg: MerPOv2Config) -> None:
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.tasks = list(tasks)
        self.zdim = cfg.embedding.dim if cfg.use_embedding else 0
        self.embedding = TaskEmbedding(obs_dim, act_dim, self.tasks, cfg.embedding) if cfg.use_embedding else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.meta_actor = TanhGaussianActor(obs_dim + self.zdim, act_dim, cfg.rac.hidden, cfg.rac.layers)
            self.meta_critic = TwinCritic(obs_dim + self.zdim, act_dim, cfg.rac.hidden, cfg.rac.layers)
        self.train_inferences: dict[int, TaskInference] = {}
        self.stats: dict[str, float] = {}
        self.imagination: Imagination | None = None  # set by fit, or `attach` for adaptation
        self.trained_uncertainty_std: float | None = None  # the penalty unit of a loaded checkpoint
        self.trained_uncertainty_reference = 0.0  # and the disagreement it leaves free, in that unit

    # -- meta-train ------------------------------------------------------------------------------
    def fit(self, datas: dict[int, dict[str, torch.Tensor]], episode_ends: dict[int, np.ndarray] | None = None,
            progress: Callable[[str], None] | None = None,
            imagination: Imagination | None = None,
            on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
        """Everything of meta-training on the tasks' transitions (`episode_ends[n]`: where each
        episode's transitions end in `datas[n]`, for the bootstrap over episodes); with
        `imagination` (latents of a world model) on imagined transitions too. `on_step(i, stats)`
        after each RAC update of the meta-learner (i from 1; stats: that update's losses, and the
        last imagined batch's reward and uncertainty); it must not touch the learner."""
        cfg = self.cfg
        say = progress or (lambda msg: None)
        ends = episode_ends or {}
        conditioned = datas
        if self.embedding is not None:
            say("task embedding: fitting the reward head and the embeddings")
            self.stats.update({f"embedding_{k}": v for k, v in self.embedding.fit(datas).items()})
            say("task embedding: inferring each meta-train task's embedding from its own log")
            rng = np.random.default_rng(cfg.seed)
            conditioned = {}
            for n in self.tasks:
                inf = self._infer_like_a_new_task(datas[n], ends.get(n), rng, seed=cfg.seed * 1000 + n)
                self.train_inferences[n] = inf
                z = inf.members[rng.integers(len(inf.members), size=len(datas[n]["obs"]))]
                conditioned[n] = condition(datas[n], z)
        pooled = {k: torch.cat([conditioned[n][k] for n in self.tasks]) for k in conditioned[self.tasks[0]]}
        r = cfg.rac
        say(f"meta-policy: {cfg.warm_start_steps} behaviour-cloning steps")
        self.stats.update(train_bc(self.meta_actor, pooled, cfg.warm_start_steps, r.batch_real, r.actor_lr,
                                   seed=cfg.seed + 11))
        say(f"meta-policy and meta-critic: {cfg.meta_steps} RAC updates on the pooled tasks")
        meta_cfg = dataclasses.replace(r, omega=1.0)
        rac = RAC(self.obs_dim + self.zdim, self.act_dim, meta_cfg, seed=cfg.seed + 13,
                  actor=self.meta_actor, critic=self.meta_critic)
        g = torch.Generator().manual_seed(cfg.seed + 17)
        self.imagination = imagination if cfg.imagine else None
        fn = None
        if self.imagination is not None:
            im = self.imagination
            self.stats["uncertainty_std"] = im.calibrate(pooled, seed=cfg.seed + 19, quantile=cfg.uncertainty_quantile)
            self.stats["real_uncertainty"] = float(im.real_uncertainty_mean)  # type: ignore[arg-type]
            self.stats["uncertainty_reference"] = im.uncertainty_reference
            fn = self.imagination.rollout_fn(self.embedding, torch.Generator().manual_seed(cfg.seed + 23))
        imagined: list[dict[str, float]] = []
        for i in range(cfg.meta_steps):
            if fn is not None and i % r.rollout_every == 0:
                idx = torch.randint(len(pooled["obs"]), (r.rollout_batch,), generator=g)
                imagined.append(rac.refresh_rollouts(pooled["obs"][idx], fn))
            idx = torch.randint(len(pooled["obs"]), (r.batch_real,), generator=g)
            last = rac.update({k: v[idx] for k, v in pooled.items()})
            if on_step is not None:
                on_step(i + 1, {**last, **({f"imagined_{k}": v for k, v in imagined[-1].items()} if imagined else {})})
        if cfg.meta_steps:
            self.stats.update({f"meta_{k}": v for k, v in last.items()})
        if imagined:
            for k in imagined[0]:
                self.stats[f"imagined_{k}"] = float(np.mean([s[k] for s in imagined]))
        return self.stats

    def _infer_like_a_new_task(self, data: dict[str, torch.Tensor], ends: np.ndarray | None,
                               rng: np.random.Generator, seed: int) -> TaskInference:
        """A meta-train task's embedding from `train_inference_draws` random subsets of
        `train_inference_episodes` episodes each (the whole log without episode ends), members
        pooled."""
        cfg = self.cfg
        if ends is None or cfg.train_inference_draws <= 0:
            return self.infer(data, ends, seed=seed)
        ends = np.asarray(ends, np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        k = min(cfg.train_inference_episodes, len(ends))
        parts = []
        for r in range(cfg.train_inference_draws):
            pick = np.sort(rng.choice(len(ends), size=k, replace=False))
            rows = np.concatenate([np.arange(starts[e], ends[e]) for e in pick])
            sub = {key: v[torch.from_numpy(rows)] for key, v in data.items()}
            parts.append(self.infer(sub, np.cumsum(ends[pick] - starts[pick]), seed=seed + 7919 * r))
        if any(p.fallback for p in parts):
            return next(p for p in parts if p.fallback)
        members = np.concatenate([p.members for p in parts])
        return TaskInference(members.mean(0), members.std(0), members,
                             float(np.mean([p.reward_mse or 0.0 for p in parts])))

    # -- meta-test -------------------------------------------------------------------------------
    def infer(self, data: dict[str, torch.Tensor], episode_ends: np.ndarray | None = None,
              seed: int = 0) -> TaskInference:
        """A task's embedding from its log; the mean embedding with `fallback` set where the
        log's rewards carry nothing to infer it from (or the ablation has no embedding)."""
        if self.embedding is None:
            return TaskInference(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((1, 0), np.float32),
                                 None, "no task embedding (ablation)")
        try:
            inf: Inference = self.embedding.infer(data, episode_ends, seed=seed)
        except NoTaskSignal as e:
            z = self.embedding.mean_embedding()
            return TaskInference(z, np.zeros_like(z), z[None], None, f"{e}; using the meta-policy's mean task")
        return TaskInference(inf.mean, inf.std, inf.members, inf.reward_mse, evidence=inf.evidence)

    def conditioned(self, data: dict[str, torch.Tensor], inf: TaskInference) -> dict[str, torch.Tensor]:
        return condition(data, inf.z) if self.zdim else data

    def policy_input(self, obs: np.ndarray, inf: TaskInference) -> np.ndarray:
        """[features, z] for one or more observations' features."""
        obs = np.asarray(obs, np.float32)
        if not self.zdim:
            return obs
        return np.concatenate([obs, np.broadcast_to(inf.z, obs.shape[:-1] + inf.z.shape)], -1).astype(np.float32)

    def adapt(self, datas: Sequence[dict[str, torch.Tensor]], infs: Sequence[TaskInference], seeds: Sequence[int],
              steps: int | None = None, omega: float | None = None,
              log_success: Sequence[float | None] | None = None, start: str | None = None) -> list[RAC]:
        """MerPO on each new task's log, conditioned on its embedding z_j. With `omega` (and
        `start`, default "meta") every log's learner is that: "meta" from (pi_c, Q_meta),
        regularized towards pi_c(., z_j) by 1 - omega; "scratch" from fresh networks with the
        behaviour term alone (omega 1). Otherwise each log's learner is `choose_learner`'s
        (`log_success`: the share of its episodes that succeeded, None where unknown). Logs that
        share a learner kind adapt as one batched learner."""
        if start not in (None, "meta", "scratch"):
            raise ValueError(f"start {start!r}: expected meta or scratch")
        if omega is not None or start is not None:
            w = 1.0 if start == "scratch" else float(self.cfg.omega if omega is None else omega)
            if start == "scratch" and omega is not None and float(omega) != 1.0:
                raise ValueError(f"omega {omega}: a learner from scratch has no meta-policy to pull towards (omega 1)")
            kinds = [(start or "meta", w)] * len(datas)
        else:
            succ = list(log_success) if log_success is not None else [None] * len(datas)
            if len(succ) != len(datas):
                raise ValueError(f"{len(datas)} logs, {len(succ)} success rates")
            kinds = [choose_learner(self.cfg, s)[:2] for s in succ]
        steps = self.cfg.adapt_steps if steps is None else steps
        out: list[RAC | None] = [None] * len(datas)
        for kind in sorted(set(kinds)):
            where, w = kind
            idx = [k for k, o in enumerate(kinds) if o == kind]
            cfg = dataclasses.replace(self.cfg.rac, omega=w)
            fns = None
            if self.imagination is not None and self.cfg.imagine:
                fns = [self.imagination.rollout_fn(self.embedding, torch.Generator().manual_seed(int(seeds[k]) + 29))
                       for k in idx]
            logs = [self.conditioned(datas[k], infs[k]) for k in idx]
            if where == "meta":
                racs = adapt_racs(self.meta_actor, self.meta_critic, logs, fns, cfg, steps, [seeds[k] for k in idx])
            else:  # the log cloned (`clone_log`), then the RAC updates if any: one learner per log
                racs = []
                for j, k in enumerate(idx):
                    actor = self.clone_log(datas[k], int(seeds[k]))
                    critic = TwinCritic(self.obs_dim + self.zdim, self.act_dim, cfg.hidden, cfg.layers).to(
                        logs[j]["obs"].device)  # fresh (drawn after the clone's seeded start)
                    racs += adapt_racs(actor, critic, [logs[j]], None if fns is None else [fns[j]], cfg,
                                       self.cfg.scratch_rac_steps, [seeds[k]])
            for k, r in zip(idx, racs, strict=True):
                out[k] = r
        return [r for r in out if r is not None]

    def clone_log(self, data: dict[str, torch.Tensor], seed: int) -> TanhGaussianActor:
        """Behaviour cloning of a task's log, as the single-task BC baseline learns it (a fresh
        actor on the state alone, initialised under `torch.manual_seed(seed)`, `scratch_bc_steps`
        steps with batches drawn by `seed`), lifted to the conditioned input with zero weights
        on the embedding: it acts as that BC policy whatever z it is given."""
        r = self.cfg.rac
        torch.manual_seed(seed)
        base = TanhGaussianActor(self.obs_dim, self.act_dim, r.hidden, r.layers).to(data["obs"].device)
        if self.cfg.scratch_bc_steps > 0:
            train_bc(base, data, self.cfg.scratch_bc_steps, r.batch_real, r.actor_lr, seed=seed)
        if not self.zdim:
            return base
        lifted = TanhGaussianActor(self.obs_dim + self.zdim, self.act_dim, r.hidden, r.layers).to(data["obs"].device)
        sd = base.state_dict()
        w = sd["net.0.weight"]  # the first layer (`rac.mlp`): [hidden, obs_dim] -> [hidden, obs_dim + zdim]
        lifted.load_state_dict({**sd, "net.0.weight": torch.cat([w, w.new_zeros(len(w), self.zdim)], 1)})
        return lifted

    def attach(self, imagination: Imagination | None, uncertainty_std: float | None,
               uncertainty_reference: float = 0.0) -> None:
        """The world model to imagine with when adapting a loaded checkpoint (with the penalty
        unit and reference measured at meta-training)."""
        if imagination is not None and uncertainty_std is not None:
            imagination.uncertainty_std = uncertainty_std
            imagination.uncertainty_reference = uncertainty_reference
            self.imagination = imagination

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": VERSION, "config": self.cfg.to_dict(), "tasks": self.tasks,
                "meta_actor": self.meta_actor.state_dict(), "meta_critic": self.meta_critic.state_dict(),
                "embedding": None if self.embedding is None else self.embedding.state_dict(),
                "uncertainty_std": None if self.imagination is None else self.imagination.uncertainty_std,
                "uncertainty_reference": 0.0 if self.imagination is None else self.imagination.uncertainty_reference}

    def load_state_dict(self, sd: dict) -> None:
        version = sd.get("version", 1)
        if version != VERSION:
            raise ValueError(f"a MerPO v{version} checkpoint: this is MerPO v{VERSION}; retrain it")
        self.meta_actor.load_state_dict(sd["meta_actor"])
        self.meta_critic.load_state_dict(sd["meta_critic"])
        self.trained_uncertainty_std = sd.get("uncertainty_std")
        self.trained_uncertainty_reference = sd.get("uncertainty_reference", 0.0)  # 0: all of u (before the option)
        if self.embedding is not None:
            self.embedding.load_state_dict(sd["embedding"])

