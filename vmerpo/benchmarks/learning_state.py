"""The state track of `vmerpo bench learning`: the learners on proprioceptive state, in minutes.

The same tasks, log draws, seeds and evaluation starts as the pixel track, with the world
model's latents replaced by the robot's 11-d state (hand position, gripper, 7 arm joints;
standardised by the meta-train logs' statistics). No image is rendered: the simulation, and so
every logged state, action and reward, is the one the pixel track records with images
(`sim.envs` `render=False`; tested). It separates "the RL and the task inference work" from
"the perception works".

The logs are collected first (each by one process), then each quality runs as two jobs, MerPO
v2's methods and the others, the costliest first (two at a time, `job_plan`):

    collect   meta-train logs (the first N train tasks) and, per draw, a 5-episode log of each
              held-out task                                          (reused when present)
    pretrain  on the pooled meta-train transitions: MerPO v2 (task embedding, pi_c, Q_meta),
              d3rlpy's IQL and BC, and IQL given the true goal
    adapt     per (held-out task, draw): BC on the log alone (from scratch), MerPO from (pi_c,
              Q_meta) at the task embedding inferred from the log, d3rlpy's IQL fine-tuned from
              its pooled learner (MerPO batched over the units: one learner each)
    evaluate  every policy on its task, the same 20 starts for every method and draw

MerPO is v2 (`learning.merpo_v2`): the task embedding inferred from each held-out log's
rewards conditions pi_c (`meta_policy`: pi_c at the inferred embedding, no RAC step on the log)
and MerPO's adaptation. The mechanism ablations (`STATE_ABLATIONS`, on the qualities
`--ablations` names, none by default): single-task RAC on the log alone (MerPO without
meta-training), the omega sweep `merpo_omega0` / `merpo_omega04` / `merpo_omega1`,
`merpo_no_embedding` (no task variable) and `iql_inferred` (d3rlpy's IQL on the same conditioned
features: the peer given our task inference). `merpo_v1` / `meta_policy_v1` (opt-in) are the
MerPO before v2.

Methods that never see the held-out log (bc_pooled, iql_pooled, iql_oracle, meta_policy_v1) are
evaluated once per task and that result is the unit value of every draw. The state track has
no model of the dynamics yet, so its RAC and MerPO learn from real transitions only (no
imagined rollouts) and LOMPO and MerPO-Adp (both need the model) are pixel-track only.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vmerpo.benchmarks.paired import Unit
from vmerpo.commands.options import AIMS

STATE_METHODS = ("bc", "rac", "merpo", "meta_policy", "merpo_omega0", "merpo_omega04", "merpo_omega1",
                 "merpo_no_embedding", "bc_pooled", "iql_pooled", "iql_finetuned", "iql_inferred", "iql_oracle")
# the mechanism ablations: run on the qualities `--ablations` names (default none: `full` then fits
# well under 30 min on 2 cores; `--ablations medium --resume` on the same --out adds them), the rest
# on all. Single-task RAC is one of them here: MerPO without meta-training (no pi_c, no Q_meta,
# omega 1), the learner of the "MerPO >= RAC" target, which is a pixel-track target
STATE_ABLATIONS = ("rac", "merpo_omega0", "merpo_omega04", "merpo_omega1", "merpo_no_embedding", "iql_inferred")
OMEGA_SWEEP = {"merpo_omega0": 0.0, "merpo_omega04": 0.4, "merpo_omega1": 1.0}
# opt-in (--methods): MerPO v1 (no task variable, per-task learners averaged into pi_c)
EXTRA_METHODS = ("merpo_v1", "meta_policy_v1")
ZERO_SHOT = ("meta_policy_v1", "bc_pooled", "iql_pooled", "iql_oracle")  # never see the held-out log
PEER_METHODS = ("bc_pooled", "iql_pooled", "iql_finetuned", "iql_inferred", "iql_oracle")  # d3rlpy
V2_METHODS = ("merpo", "meta_policy", *OMEGA_SWEEP, "iql_inferred")  # need the embedding
EVAL_SEED = 1000  # evaluation starts: episode_seed(EVAL_SEED, task, k), shared by methods and draws


@dataclass(frozen=True)
class StateBudget:
    pretrain_steps: int  # pi_c's warm start (behaviour cloning of the pooled logs)
    meta_steps: int  # MerPO meta-steps (meta_batch tasks x inner_steps RAC updates each)
    adapt_steps: int  # RAC (from scratch) and MerPO (from pi_c, Q_meta) on each held-out log
    v2_meta_steps: int  # MerPO v2: RAC updates of the conditioned (pi_c, Q_meta) on the pooled tasks
    bc_steps: int  # BC on each held-out log, from scratch
    iql_steps: int  # d3rlpy IQL / BC on the pooled logs
    iql_finetune_steps: int  # d3rlpy IQL on each held-out log


STATE_BUDGETS = {
    "smoke": StateBudget(pretrain_steps=2000, meta_steps=200, adapt_steps=500, v2_meta_steps=3000, bc_steps=1000,
                         iql_steps=3000, iql_finetune_steps=200),
    "full": StateBudget(pretrain_steps=2000, meta_steps=200, adapt_steps=500, v2_meta_steps=3000, bc_steps=1000,
                        iql_steps=3000, iql_finetune_steps=200),
}
STATE_BUDGETS["power"] = STATE_BUDGETS["full"]  # the same learners on more units


def state_rac_config():
    """The `cpu` preset's RAC with two hidden layers instead of three: the input is 11 numbers,
    not a 320-d latent, and each update costs about half (measured with `vmerpo bench rac-speed`
    style timing: the hidden-to-hidden products dominate)."""
    import dataclasses

    from learning.merpo_train import preset

    return dataclasses.replace(preset("cpu").merpo.rac, layers=2)


# MerPO's omega rule on states (`merpo_v2.choose_omega`): omega 0 (the meta-policy at the inferred
# task leads) unless every episode of the log succeeded. On states pi_c is strong (reach medium 0.99
# zero-shot) and the fixed omega 0.4 held MerPO below it: reach medium 0.97 vs 0.81 (+0.16 [+0.03,
# +0.32], experiments/22 and /36, the units it was chosen on); push medium (32 episodes per task)
# 0.61 vs 0.56, +0.05 [-0.07, +0.16], and +0.02 [-0.15, +0.17] on log draws it was not chosen on
# (experiments/36): there the gain is not confirmed. The image presets keep `fixed`: a short
# meta-training leaves pi_c weak (docs/algorithms.md 5b, omega rules)
STATE_OMEGA_RULE = "solved-log"


def state_v2_config(budget: StateBudget, seed: int, use_embedding: bool = True,
                    omega_rule: str = STATE_OMEGA_RULE):
    """MerPO v2 on states: the state RAC with the advantage-weighted behaviour term."""
    import dataclasses

    from learning.merpo_v2 import MerPOv2Config

    rac = dataclasses.replace(state_rac_config(), behaviour_weight="advantage")
    return MerPOv2Config(rac=rac, use_embedding=use_embedding, warm_start_steps=budget.pretrain_steps,
                         meta_steps=budget.v2_meta_steps, adapt_steps=budget.adapt_steps, seed=seed,
                         omega_rule=omega_rule)


def check_learner_kind(path: Path, kind: tuple[str, float]) -> None:
    """Refuse a kept MerPO evaluation whose recorded learner (start, omega) is not the one this
    run's rules choose (an --out resumed under another omega rule); one that records no omega
    predates the record and is taken as it is."""
    got = json.loads(path.read_text())
    if "omega" in got and (got.get("start", "meta"), got["omega"]) != kind:
        raise ValueError(f"{path} holds MerPO from {got.get('start', 'meta')} at omega {got['omega']:g}, this "
                         f"run's rules choose {kind[0]} at omega {kind[1]:g}: use another --out")


def log_success(log: dict[str, np.ndarray], task: int) -> float:
    """The share of `task`'s episodes in `log` that succeeded (the held-out log's own level)."""
    return float(np.mean(log["episode_success"][log["episode_task"] == task]))


def episode_ends_of(log: dict[str, np.ndarray], task: int) -> np.ndarray:
    """Where each of `task`'s episodes ends in its `transitions` rows (one row fewer per episode)."""
    ep = np.flatnonzero(log["episode_task"] == task)
    lengths = np.diff(np.concatenate([[0], log["episode_ends"]]))[ep] - 1
    return np.cumsum(lengths)


# -- data ----------------------------------------------------------------------------------------
# Families whose tasks place an object the robot must move: there the state track appends the
# object's position (Meta-World's observation, entries 4:7) to the proprioceptive state, as a
# perception system would report it: the puck moves with the task. (It is necessary, not enough:
# with and without it every method failed on push medium, IQL given the true goal 0.01 against the
# logs' 0.45, experiments/25.) Reach's object is not part of its task (it would only identify the
# task), so reach keeps 11.
OBJECT_FAMILIES = ("push-v3",)


class ObjectStateEnv:
    """An environment whose observation's state ends with the object's position (3 numbers)."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def _with_object(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obj = np.asarray(self.env.privileged_observation()[4:7], np.float32)
        return {**obs, "state": np.concatenate([np.asarray(obs["state"], np.float32), obj])}

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        return self._with_object(self.env.reset(seed=seed))

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._with_object(obs), reward, terminated, truncated, info


def state_env(family: str, hand_init_noise: float) -> Any:
    """The state track's environment: no rendering; the object's position appended on
    OBJECT_FAMILIES."""
    from sim.envs import make_env

    env = make_env(family, hand_init_noise=hand_init_noise, render=False)
    return ObjectStateEnv(env) if family in OBJECT_FAMILIES else env


def collect_state_log(path: Path, family: str, quality: str, tasks: list[int], episodes: int, seed: int,
                      hand_init_noise: float, aim: bool | None) -> dict[str, np.ndarray]:
    """The log `sim.collect` would record (same episode seeds and policies), without images:
    states, actions, rewards and per-episode success, goal and distances. Cached as npz (one
    writer per file: `run_track` collects every log before the jobs that read them start)."""
    if path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    for stale in path.parent.glob(f"{path.name}.*.tmp.npz"):  # a killed collection's
        stale.unlink()
    from sim.evaluate import episode_seed, run_episode
    from sim.policies import make_behavior_policy

    env = state_env(family, hand_init_noise)
    try:
        policy = make_behavior_policy(quality, env, aim)
        limiter = env.safety_limiter()
        parts: dict[str, list] = {k: [] for k in ("state", "action", "reward", "terminal")}
        ends, task_of, success, goal, final_d, min_d = [], [], [], [], [], []
        n = 0
        for task in tasks:
            for k in range(episodes):
                r = run_episode(env, policy, limiter, task, episode_seed(seed, task, k), k, record=True)
                assert r.data is not None
                for key in parts:
                    parts[key].append(r.data[key])
                n += len(r.data["action"])
                ends.append(n)
                task_of.append(task)
                success.append(r.success)
                goal.append(env.goal_position())
                final_d.append(r.final_distance)
                min_d.append(r.min_distance)
    finally:
        env.close()
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out.update(episode_ends=np.asarray(ends, np.int64), episode_task=np.asarray(task_of, np.int64),
               episode_success=np.asarray(success, bool), episode_goal=np.asarray(goal, np.float32),
               episode_final_distance=np.asarray(final_d, np.float32),
               episode_min_distance=np.asarray(min_d, np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **out)  # type: ignore[arg-type]
    tmp.replace(path)
    return out


@dataclass
class Features:
    """The shared feature map: standardised state (and, for the oracle, the standardised goal)."""

    state_mean: np.ndarray
    state_std: np.ndarray
    goal_mean: np.ndarray
    goal_std: np.ndarray

    @classmethod
    def fit(cls, log: dict[str, np.ndarray]) -> Features:
        return cls(log["state"].mean(0), log["state"].std(0) + 1e-6,
                   log["episode_goal"].mean(0), log["episode_goal"].std(0) + 1e-6)

    def __call__(self, state: np.ndarray, goal: np.ndarray | None = None) -> np.ndarray:
        x = (np.asarray(state, np.float32) - self.state_mean) / self.state_std
        if goal is None:
            return x.astype(np.float32)
        g = (np.asarray(goal, np.float32) - self.goal_mean) / self.goal_std
        return np.concatenate([x, np.broadcast_to(g, x.shape[:-1] + g.shape[-1:])], -1).astype(np.float32)


def transitions(log: dict[str, np.ndarray], feats: Features, reward_mean: float, reward_std: float,
                task: int | None = None, oracle: bool = False) -> dict[str, np.ndarray]:
    """(s, a, r, s', done) of every row with a successor in its episode (no true terminals here)."""
    ends = log["episode_ends"]
    starts = np.concatenate([[0], ends[:-1]])
    idx, goals = [], []
    for e, (s, t) in enumerate(zip(starts, ends, strict=True)):
        if task is None or log["episode_task"][e] == task:
            idx.append(np.arange(s, t - 1))
            goals.append(np.repeat(log["episode_goal"][e][None], t - 1 - s, 0))
    if not idx:
        raise ValueError(f"no episodes of task {task} in the log")
    i = np.concatenate(idx)
    g = np.concatenate(goals) if oracle else None
    return {"obs": feats(log["state"][i], g), "act": np.clip(log["action"][i], -1.0, 1.0).astype(np.float32),
            "rew": ((log["reward"][i] - reward_mean) / reward_std).astype(np.float32),
            "next_obs": feats(log["state"][i + 1], g), "done": np.zeros(len(i), np.float32)}


def _torch(d: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in d.items()}


# -- policies --------------------------------------------------------------------------------------
class FeaturePolicy:
    """A deterministic policy on the shared features, for `sim.evaluate` (actions in [-1, 1]
    are the env's own action units: its limits are +-1)."""

    def __init__(self, act_fn, feats: Features, goal: np.ndarray | None = None,
                 z: np.ndarray | None = None) -> None:
        """`goal`: the true goal (the oracle), standardised by `feats`; `z`: a task embedding,
        appended as it is (MerPO v2, IQL given the inferred embedding)."""
        self.act_fn, self.feats, self.goal = act_fn, feats, goal
        self.z = None if z is None or not len(z) else np.asarray(z, np.float32)[None]

    def reset(self) -> None:
        pass

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return self.act_batch([observation])[0]

    def act_batch(self, observations: list[dict[str, np.ndarray]]) -> np.ndarray:
        """Actions [B, 4] for B observations in one forward pass (`sim.evaluate.evaluate_lockstep`)."""
        n = len(observations)
        x = self.feats(np.stack([o["state"] for o in observations]),
                       None if self.goal is None else np.repeat(self.goal[None], n, 0))
        if self.z is not None:
            x = np.concatenate([x, np.repeat(self.z, n, 0)], -1)
        return np.clip(np.asarray(self.act_fn(x), np.float32), -1.0, 1.0)


def actor_fn(actor):
    import torch

    actor = copy.deepcopy(actor).eval()

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor.mean_unit(torch.from_numpy(x)).numpy()

    return fn


EVAL_LOCKSTEP = 10  # evaluation episodes run side by side (one batched policy call per step); ~22 MB per env


def eval_envs(family: str, hand_init_noise: float, n: int = EVAL_LOCKSTEP) -> list[Any]:
    """The environments a state-track evaluation runs its episodes on, side by side."""
    return [state_env(family, hand_init_noise) for _ in range(n)]


def evaluate_policy(env, policy, task: int, episodes: int) -> dict[str, Any]:
    """`episodes` evaluation episodes of `policy` on `task` from the shared starts (EVAL_SEED).
    `env`: one environment (episodes one after another), or a list of them for a policy with
    `act_batch` (`eval_envs`: the same episodes side by side, `sim.evaluate.evaluate_lockstep`)."""
    from sim.evaluate import evaluate, evaluate_lockstep

    if isinstance(env, list):
        res = evaluate_lockstep(policy.act_batch, env, [task], episodes, seed=EVAL_SEED)
    else:
        res = evaluate(policy, env, [task], episodes, seed=EVAL_SEED)
    return {"success_rate": res["success_rate"], "mean_return": res["mean_return"],
            "final_distance": res.get("mean_final_distance"), "min_distance": res.get("mean_min_distance"),
            "episodes": res["episodes"]}


# -- one quality's job ---------------------------------------------------------------------------------
def run_quality(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything of one quality: logs, pooled learners, adaptations, evaluations. Each unit's
    evaluation is cached as JSON (a killed run continues where it stopped)."""
    import torch

    torch.set_num_threads(1)
    from learning.baselines import method_config
    from learning.merpo import MerPO, adapt_racs, train_bc
    from learning.merpo_train import preset
    from learning.rac import TanhGaussianActor
    from learning.world_model_train import write_text_atomic
    from vmerpo.benchmarks import peer

    out = Path(job["out"])
    q, family = job["quality"], job["family"]
    budget = StateBudget(**job["state_budget"])
    methods: list[str] = job["methods"]
    group = job.get("group", "all")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[state {q}/{group} {(time.perf_counter() - t0) / 60:5.1f} min] {msg}", file=sys.stderr, flush=True)

    log("loading the logs (no images)")
    train_log = collect_state_log(*log_spec(job, None))
    heldout_logs = {d: collect_state_log(*log_spec(job, d)) for d in range(job["draws"])}
    timings = {"collect_s": time.perf_counter() - t0}
    evals_dir = out / "evals" / q
    evals_dir.mkdir(parents=True, exist_ok=True)
    units: list[Unit] = [(t, d) for t in job["heldout"] for d in range(job["draws"])]

    def cached(method: str, task: int, draw: int | None) -> Path:
        return evals_dir / (f"{method}_t{task}" + ("" if draw is None else f"_d{draw}") + ".json")

    # a kept MerPO evaluation must be of the learner this run's rules choose (an --out resumed
    # under another omega rule is refused before anything runs)
    from learning.merpo_v2 import choose_learner

    v2cfg = state_v2_config(budget, job["seed"], omega_rule=job.get("omega_rule", STATE_OMEGA_RULE))
    for method in ("merpo", "merpo_no_embedding"):
        for task, d in units:
            if method in methods and cached(method, task, d).exists():
                check_learner_kind(cached(method, task, d),
                                   choose_learner(v2cfg, log_success(heldout_logs[d], task))[:2])
    todo = {m for m in methods
            if any(not cached(m, t, None if m in ZERO_SHOT else d).exists() for t, d in units)}
    rows: list[dict[str, Any]] = []
    envs: list[Any] = []  # made at the first evaluation
    feats = Features.fit(train_log)
    r_mean, r_std = float(train_log["reward"].mean()), float(max(train_log["reward"].std(), 1e-6))
    pooled = transitions(train_log, feats, r_mean, r_std)
    per_unit = {(t, d): transitions(heldout_logs[d], feats, r_mean, r_std, task=t) for t, d in units}
    rc = state_rac_config()
    seed = job["seed"]
    goals = {t: heldout_logs[0]["episode_goal"][list(heldout_logs[0]["episode_task"]).index(t)] for t in job["heldout"]}

    def record(method: str, task: int, draw: int | None, policy, **extra: Any) -> None:
        path = cached(method, task, draw)
        if path.exists():
            return
        if not envs:
            envs.extend(eval_envs(family, job["hand_init_noise"]))
        res = evaluate_policy(envs, policy, task, job["eval_episodes"])
        write_text_atomic(path, json.dumps({**res, **extra}))

    def adapted(method: str, actors: list) -> None:
        for (t, d), a in zip(units, actors, strict=True):
            record(method, t, d, FeaturePolicy(actor_fn(a), feats))

    try:
        if set(V2_METHODS) & todo:
            v2_methods(job, todo, budget, v2cfg, train_log, heldout_logs, feats, r_mean, r_std, units, per_unit, goals,
                       record, cached, timings, log)
        if "merpo_no_embedding" in todo:  # the ablation: MerPO v2 without a task variable
            from learning.merpo_v2 import MerPOv2

            log("MerPO v2 without the task embedding (ablation)")
            t = time.perf_counter()
            tasks = sorted(set(train_log["episode_task"].tolist()))
            blind = MerPOv2(pooled["obs"].shape[1], pooled["act"].shape[1], tasks,
                            replace(v2cfg, use_embedding=False))
            blind.fit({n: _torch(transitions(train_log, feats, r_mean, r_std, task=n)) for n in tasks})
            infs = [blind.infer(_torch(per_unit[u])) for u in units]
            # MerPO's own rules (omega per log), so that the embedding is the one difference
            success = [log_success(heldout_logs[d], t) for t, d in units]
            racs = blind.adapt([_torch(per_unit[u]) for u in units], infs, [seed * 1000 + i for i in range(len(units))],
                               log_success=success)
            timings["merpo_no_embedding_s"] = time.perf_counter() - t
            for (task, d), r, s in zip(units, racs, success, strict=True):
                start, w, _ = choose_learner(blind.cfg, s)
                record("merpo_no_embedding", task, d, FeaturePolicy(actor_fn(r.actor), feats), omega=w, start=start)
        # MerPO v1 (model-free on states, no task variable) and its zero-shot meta-policy
        if {"merpo_v1", "meta_policy_v1"} & todo:
            log(f"MerPO: pi_c warm start, {budget.meta_steps} meta-steps")
            t = time.perf_counter()
            cfg = copy.deepcopy(preset("cpu").merpo)
            cfg.rac = rc
            cfg.seed = seed
            cfg.warm_start_steps = budget.pretrain_steps
            tasks = sorted(set(train_log["episode_task"].tolist()))
            merpo = MerPO(pooled["obs"].shape[1], pooled["act"].shape[1], tasks, cfg)
            data = {n: _torch(transitions(train_log, feats, r_mean, r_std, task=n)) for n in tasks}
            merpo.warm_start(_torch(pooled))
            for _ in range(budget.meta_steps):
                merpo.meta_step(data, None)
            timings["merpo_v1_meta_train_s"] = time.perf_counter() - t
            if "meta_policy_v1" in todo:
                for task in job["heldout"]:
                    record("meta_policy_v1", task, None, FeaturePolicy(actor_fn(merpo.meta_actor), feats))
            if "merpo_v1" in todo:
                log(f"MerPO: adapting to {len(units)} logs")
                t = time.perf_counter()
                racs = adapt_racs(merpo.meta_actor, merpo.meta_critic, [_torch(per_unit[u]) for u in units], None,
                                  method_config("merpo", rc), budget.adapt_steps,
                                  [seed * 1000 + i for i in range(len(units))])
                timings["merpo_v1_adapt_s"] = time.perf_counter() - t
                adapted("merpo_v1", [r.actor for r in racs])
        if "rac" in todo:  # single-task RAC: the task's log alone, from scratch
            log(f"RAC on {len(units)} logs")
            t = time.perf_counter()
            racs = adapt_racs(None, None, [_torch(per_unit[u]) for u in units], None, method_config("rac", rc),
                              budget.adapt_steps, [seed * 1000 + i for i in range(len(units))])
            timings["rac_s"] = time.perf_counter() - t
            adapted("rac", [r.actor for r in racs])
        if "bc" in todo:  # behaviour cloning of the task's log, from scratch
            log(f"BC on {len(units)} logs")
            t = time.perf_counter()
            actors = []
            for i, u in enumerate(units):
                torch.manual_seed(seed * 1000 + i)
                a = TanhGaussianActor(pooled["obs"].shape[1], pooled["act"].shape[1], rc.hidden, rc.layers)
                train_bc(a, _torch(per_unit[u]), budget.bc_steps, rc.batch_real, rc.actor_lr, seed=seed * 1000 + i)
                actors.append(a)
            timings["bc_s"] = time.perf_counter() - t
            adapted("bc", actors)
        if {"bc_pooled", "iql_pooled", "iql_finetuned", "iql_oracle"} & todo:
            log("d3rlpy IQL / BC on the pooled logs (and IQL fine-tuned on each log)")
            pc = peer.PeerConfig()
            obs_dim, act_dim = pooled["obs"].shape[1], pooled["act"].shape[1]
            if "bc_pooled" in todo:
                t = time.perf_counter()
                algo = peer.make("bc", obs_dim, act_dim, pc, seed)
                peer.fit(algo, pooled, budget.iql_steps, seed)
                timings["bc_pooled_s"] = time.perf_counter() - t
                for task in job["heldout"]:
                    record("bc_pooled", task, None, FeaturePolicy(lambda x, a=algo: peer.act(a, x), feats))
            if {"iql_pooled", "iql_finetuned"} & todo:
                t = time.perf_counter()
                algo = peer.make("iql", obs_dim, act_dim, pc, seed)
                peer.fit(algo, pooled, budget.iql_steps, seed)
                timings["iql_pooled_s"] = time.perf_counter() - t
                for task in job["heldout"]:
                    record("iql_pooled", task, None, FeaturePolicy(lambda x, a=algo: peer.act(a, x), feats))
                if "iql_finetuned" in todo:
                    t = time.perf_counter()
                    for i, (task, d) in enumerate(units):
                        if not cached("iql_finetuned", task, d).exists():
                            ft = peer.finetuned(algo, per_unit[(task, d)], budget.iql_finetune_steps, seed * 1000 + i)
                            record("iql_finetuned", task, d, FeaturePolicy(lambda x, a=ft: peer.act(a, x), feats))
                    timings["iql_finetune_s"] = time.perf_counter() - t
            if "iql_oracle" in todo:
                t = time.perf_counter()
                oracle = transitions(train_log, feats, r_mean, r_std, oracle=True)
                algo = peer.make("iql", oracle["obs"].shape[1], act_dim, pc, seed)
                peer.fit(algo, oracle, budget.iql_steps, seed)
                timings["iql_oracle_s"] = time.perf_counter() - t
                for task in job["heldout"]:
                    record("iql_oracle", task, None,
                           FeaturePolicy(lambda x, a=algo: peer.act(a, x), feats, goal=goals[task]))
    finally:
        for env in envs:
            env.close()
    for m in methods:
        for task, d in units:
            res = json.loads(cached(m, task, None if m in ZERO_SHOT else d).read_text())
            inference = evals_dir / f"inference_t{task}_d{d}.json"
            if m in V2_METHODS and inference.exists():
                res["inference_goal_error_cm"] = json.loads(inference.read_text())["goal_error_cm"]
            rows.append({"track": "state", "quality": q, "method": m, "task": task, "draw": d,
                         "zero_shot": m in ZERO_SHOT, **res})
    behaviour = {f"{t},{d}": log_success(heldout_logs[d], t) for t, d in units}
    timings["total_s"] = time.perf_counter() - t0
    log("done")
    return [{"rows": rows, "behaviour": behaviour, "timings": timings, "quality": q, "group": group}]


def v2_methods(job, todo, budget, v2cfg, train_log, heldout_logs, feats, r_mean, r_std, units, per_unit, goals,
               record, cached, timings, log) -> None:
    """MerPO v2 and what shares its task inference: the meta-policy at the inferred embedding,
    MerPO with its rules (`merpo_v2.choose_learner` on the log's success: start and omega), the
    omega sweep (0, 0.4, 1, from pi_c), d3rlpy's IQL given the same embeddings. Each learner kind
    (start, omega) adapts the units that need it once (seed per unit, as `vmerpo adapt` would):
    MerPO's unit is the sweep's learner where its rules chose the sweep's, evaluated once. Each unit's inference (embedding, spread, evidence,
    the goal it places through a linear probe of the meta-train embeddings, the log's success
    and MerPO's omega) is kept in `inference_t{task}_d{draw}.json`."""

    import torch

    from learning.merpo_v2 import MerPOv2, choose_learner
    from learning.task_embedding import condition, goal_probe
    from learning.world_model_train import write_text_atomic
    from vmerpo.benchmarks import peer

    out = Path(job["out"]) / "evals" / job["quality"]
    seed = job["seed"]
    tasks = sorted(set(train_log["episode_task"].tolist()))
    datas = {n: _torch(transitions(train_log, feats, r_mean, r_std, task=n)) for n in tasks}
    ends = {n: episode_ends_of(train_log, n) for n in tasks}
    t = time.perf_counter()
    obs_dim, act_dim = datas[tasks[0]]["obs"].shape[1], datas[tasks[0]]["act"].shape[1]
    m = MerPOv2(obs_dim, act_dim, tasks, v2cfg)
    m.fit(datas, ends, progress=log)
    timings["merpo_meta_train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    assert m.embedding is not None
    tz = m.embedding.train_embeddings()
    goal_of = {n: train_log["episode_goal"][list(train_log["episode_task"]).index(n)] for n in tasks}
    W, b = goal_probe(np.stack([tz[n] for n in tasks]), np.stack([goal_of[n] for n in tasks]))
    infs = []
    success = [log_success(heldout_logs[d], task) for task, d in units]
    rule = [choose_learner(m.cfg, s)[:2] for s in success]  # (start, omega) per unit
    for i, (task, d) in enumerate(units):
        inf = m.infer(_torch(per_unit[(task, d)]), episode_ends_of(heldout_logs[d], task), seed=seed * 1000 + i)
        infs.append(inf)
        err = float(np.linalg.norm(inf.z @ W + b - goals[task]) * 100)
        (out / f"inference_t{task}_d{d}.json").write_text(json.dumps(
            {"z": inf.z.tolist(), "std": inf.std.tolist(), "goal_error_cm": err, "fallback": inf.fallback,
             "reward_mse": inf.reward_mse, "evidence": inf.evidence, "log_success": success[i],
             "merpo_start": rule[i][0], "merpo_omega": rule[i][1], "omega_rule": m.cfg.omega_rule,
             "start_rule": m.cfg.start_rule}))
    timings["merpo_inference_s"] = time.perf_counter() - t
    log(f"task inference: goal placed {np.mean([json.loads((out / f'inference_t{u[0]}_d{u[1]}.json').read_text())['goal_error_cm'] for u in units]):.1f} cm off on average")
    if "meta_policy" in todo:
        for (task, d), inf in zip(units, infs, strict=True):
            record("meta_policy", task, d, FeaturePolicy(actor_fn(m.meta_actor), feats, z=inf.z))
    omega_of = {"merpo": dict(enumerate(rule)),
                **{k: {i: ("meta", w) for i in range(len(units))} for k, w in OMEGA_SWEEP.items()}}

    def evaluated_at(method: str, i: int, kind: tuple[str, float]) -> Path | None:
        """The unit's evaluation of `method` if it is of learner `kind` (each records its start and
        omega; evaluations from before the start rule were all from pi_c)."""
        path = cached(method, *units[i])
        if not path.exists():
            return None
        got = json.loads(path.read_text())
        return path if (got.get("start", "meta"), got.get("omega")) == kind else None

    # a unit's learner at an omega is one learner (the same log, seed and update), whichever method
    # asks: an evaluation made for one method (an earlier invocation's included) stands for the others
    wanted: dict[str, dict[int, tuple[str, float]]] = {}  # method -> {unit: learner kind}, still to evaluate
    reused = 0
    for method in ("merpo", *OMEGA_SWEEP):
        if method not in todo:
            continue
        wanted[method] = {}
        for i, kind in omega_of[method].items():
            if cached(method, *units[i]).exists():  # MerPO's own: checked against its rules (run_quality)
                continue
            done = [p for k in omega_of if omega_of[k][i] == kind and (p := evaluated_at(k, i, kind)) is not None]
            if done:
                write_text_atomic(cached(method, *units[i]), done[0].read_text())
                reused += 1
            else:
                wanted[method][i] = kind
    if reused:
        log(f"MerPO: {reused} unit evaluation(s) reused from another method with the same learner")
    for kind in sorted({k for per in wanted.values() for k in per.values()}):
        start, w = kind
        idx = sorted({i for per in wanted.values() for i, o in per.items() if o == kind})
        log(f"MerPO {'from pi_c' if start == 'meta' else 'from scratch'} at omega {w:g}: adapting to {len(idx)} logs")
        t = time.perf_counter()
        racs = m.adapt([_torch(per_unit[units[i]]) for i in idx], [infs[i] for i in idx],
                       [seed * 1000 + i for i in idx], omega=w, start=start)
        timings[f"merpo_omega{w:g}_adapt_s" if start == "meta" else f"merpo_{start}_adapt_s"] = time.perf_counter() - t
        evaluated: dict[int, Path] = {}  # this omega's learner of a unit, evaluated once
        for i, r in zip(idx, racs, strict=True):
            task, d = units[i]
            for method, per in wanted.items():
                if per.get(i) != kind:
                    continue
                if i in evaluated:
                    if not cached(method, task, d).exists():
                        write_text_atomic(cached(method, task, d), evaluated[i].read_text())
                    continue
                record(method, task, d, FeaturePolicy(actor_fn(r.actor), feats, z=infs[i].z), omega=w, start=start)
                evaluated[i] = cached(method, task, d)
    if "iql_inferred" in todo:  # the peer on the same conditioned features
        log("d3rlpy IQL given the inferred embeddings")
        t = time.perf_counter()
        rng = np.random.default_rng(seed)
        parts = []
        for n in tasks:
            inf = m.train_inferences[n]
            parts.append(condition(datas[n], inf.members[rng.integers(len(inf.members), size=len(datas[n]["obs"]))]))
        pooled = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
        algo = peer.make("iql", pooled["obs"].shape[1], act_dim, peer.PeerConfig(), seed)
        peer.fit(algo, pooled, budget.iql_steps, seed)
        timings["iql_inferred_s"] = time.perf_counter() - t
        for (task, d), inf in zip(units, infs, strict=True):
            record("iql_inferred", task, d, FeaturePolicy(lambda x, a=algo: peer.act(a, x), feats, z=inf.z))


def state_budget_dict(name: str, learner_steps: int | None = None) -> dict[str, int]:
    """Budget `name`'s learner steps; `learner_steps` (--learner-steps) replaces MerPO v2's
    meta-training updates and the pooled d3rlpy learners' (v2_meta_steps, iql_steps)."""
    d = asdict(STATE_BUDGETS[name])
    if learner_steps is not None:
        d.update(v2_meta_steps=int(learner_steps), iql_steps=int(learner_steps))
    return d


# Rough cost of each method on one quality of the `full` design (seconds on one of the 2 cores,
# training and evaluation, from the timings of experiments/18 and /25), for ordering the jobs.
METHOD_COST = {"merpo": 105, "meta_policy": 45, "merpo_omega0": 105, "merpo_omega04": 105, "merpo_omega1": 105,
               "iql_inferred": 90, "merpo_no_embedding": 195, "rac": 105, "bc": 75, "bc_pooled": 25,
               "iql_pooled": 60, "iql_finetuned": 160, "iql_oracle": 60, "merpo_v1": 200, "meta_policy_v1": 15}
V2_FIXED_COST = 230  # MerPO v2's meta-training and the task inference its methods share


def job_plan(methods_by_quality: dict[str, list[str]]) -> list[tuple[str, str, list[str]]]:
    """(quality, group, methods) jobs, the costliest first: each quality in two jobs, the methods
    that share MerPO v2's meta-model and task inference (`V2_METHODS`, group "v2") and the
    others ("other"), so that 2 workers finish together (one job per quality left the quality
    with the ablations running alone at the end)."""
    jobs = []
    for q, ms in methods_by_quality.items():
        for group, part in (("v2", [m for m in ms if m in V2_METHODS]), ("other", [m for m in ms if m not in V2_METHODS])):
            if part:
                cost = sum(METHOD_COST.get(m, 100) for m in part) + (V2_FIXED_COST if group == "v2" else 0)
                jobs.append((cost, q, group, part))
    jobs.sort(key=lambda j: -j[0])
    return [(q, group, part) for _, q, group, part in jobs]


def log_spec(job: dict[str, Any], draw: int | None) -> tuple:
    """`collect_state_log`'s arguments for a job's meta-train log (draw None) or held-out draw."""
    out, q = Path(job["out"]) / "data", job["quality"]
    if draw is None:
        return (out / f"{q}_train.npz", job["family"], q, job["train_tasks"], job["episodes_per_task"],
                job["seeds"]["train"], job["hand_init_noise"], job["aim"])
    return (out / f"{q}_heldout_d{draw}.npz", job["family"], q, job["heldout"], job["heldout_episodes"],
            job["seeds"]["heldout"][draw], job["hand_init_noise"], job["aim"])


def _collect(spec: tuple) -> float:
    t = time.perf_counter()
    collect_state_log(*spec)
    return time.perf_counter() - t


def run_track(out: Path, family: str, design, heldout: list[int], train: list[int],
              methods_by_quality: dict[str, list[str]],
              args) -> tuple[list[dict], dict[tuple[str, int, int], float], dict[str, float]]:
    """Every quality's job (`methods_by_quality[q]`), `args.workers` at a time (spawned
    processes); returns the unit rows, the held-out logs' own success per unit and the timings."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from vmerpo.benchmarks.learning import log_seeds

    aim = AIMS[args.aim]
    jobs = [{"out": str(out / "state"), "quality": q, "group": group, "family": family,
             "state_budget": state_budget_dict(args.budget, args.learner_steps),
             "methods": ms, "train_tasks": train, "episodes_per_task": design.episodes_per_task,
             "heldout": heldout, "heldout_episodes": design.heldout_episodes, "draws": design.draws,
             "eval_episodes": design.eval_episodes, "seeds": log_seeds(q, design.draws),
             "hand_init_noise": args.hand_init_noise, "aim": aim, "seed": args.seed,
             "omega_rule": STATE_OMEGA_RULE}
            for q, group, ms in job_plan({q: methods_by_quality[q] for q in design.qualities})]
    t0 = time.perf_counter()
    rows: list[dict] = []
    behaviour: dict[tuple[str, int, int], float] = {}
    timings: dict[str, float] = {}
    durations: list[float] = []
    print(f"state track: {len(design.qualities)} qualities x {len(heldout)} tasks x {design.draws} draw(s) x "
          f"{'/'.join(str(len(methods_by_quality[q])) for q in design.qualities)} methods in {len(jobs)} jobs, "
          f"{args.workers} at a time", file=sys.stderr)
    with ProcessPoolExecutor(max(1, args.workers), mp_context=mp.get_context("spawn")) as pool:
        # every log first, each by one process (a quality's two jobs read the same logs)
        first = {j["quality"]: j for j in reversed(jobs)}
        specs = [log_spec(j, d) for j in first.values() for d in (None, *range(design.draws))]
        todo = [sp for sp in specs if not sp[0].exists()]
        if todo:
            print(f"state track: collecting {len(todo)} logs (no images)", file=sys.stderr)
            timings["collect_s"] = round(sum(pool.map(_collect, todo)), 1)
        futures = [pool.submit(run_quality, j) for j in jobs]
        for done, fut in enumerate(as_completed(futures), 1):
            res = fut.result()[0]
            rows += res["rows"]
            for key, v in res["behaviour"].items():
                t, d = (int(x) for x in key.split(","))
                behaviour[(res["quality"], t, d)] = v
            # both jobs of a quality time their log loading and their total: keys per group
            timings.update({f"{res['quality']}_" + (f"{res['group']}_{k}" if k in ("collect_s", "total_s") else k):
                            round(v, 1) for k, v in res["timings"].items()})
            el = time.perf_counter() - t0
            left = len(jobs) - done
            durations.append(res["timings"]["total_s"])
            eta = sum(durations) / len(durations) * left / max(1, args.workers)
            print(f"state track: {done}/{len(jobs)} jobs done ({res['quality']}/{res['group']}), {el / 60:.1f} min "
                  "elapsed" + (f", about {eta / 60:.0f} min left" if left else ""), file=sys.stderr)
    return rows, behaviour, timings
