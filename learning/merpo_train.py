"""Run directories for `vmerpo train` and `vmerpo adapt`: world model -> cached latents ->
MerPO meta-training -> meta-test adaptation -> a policy that exports to ONNX.

    RUN/                      `vmerpo train`
      config.json             format/version, the resolved config, data path + hash, task slots
      world_model/            the world-model run (or a link to the one given with --world-model)
      latents.npz             posterior latents of the meta-train episodes (encoded once)
      normalizer.json         reward mean/std, action limits, uncertainty std
      checkpoints/merpo.pt    MerPO state (atomic; `--resume` continues from it)
      tb/ metrics.jsonl       TensorBoard scalars and the same numbers as JSON lines
    RUN2/                     `vmerpo adapt --run RUN --data new_task.zarr`
      config.json             kind "adapted", parent run, task id, data hash
      task_model.pt           world model with theta_j (the task-adapted heads)
      policy.pt               the task policy (actor) + normalizer

Periodic sim evaluation is injected by the caller (`evaluate` callback): `learning` never
imports `sim`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from learning import world_model_train as wmt
from learning.baselines import META_METHODS, method_config, pretrain, train_bc
from learning.export import DeployedPolicy
from learning.latents import LatentCache, encode_store
from learning.merpo import (
    MerPO,
    MerPOConfig,
    Normalizer,
    adapt_rac,
    adaptive_omega,
    fit_normalizer,
    model_rollout_fn,
    transitions,
    uncertainty_std,
)
from learning.merpo_v2 import Imagination, MerPOv2, MerPOv2Config, TaskInference, choose_learner
from learning.meta_model import ADAPT_HEADS, task_model
from learning.meta_model import adapt as adapt_model
from learning.rac import RACConfig, TanhGaussianActor, TwinCritic
from learning.runtime.spec import PolicySpec
from learning.store import EpisodeStore, StoreSpec
from learning.task_embedding import TaskEmbeddingConfig

RUN_FORMAT = "vmerpo.run"
RUN_VERSION = 1  # bump when the run-directory layout or config schema changes
ALGORITHMS = ("merpo", "merpo_v2")  # merpo: MerPO as published (v1); merpo_v2: learning/merpo_v2.py


@dataclass
class RunConfig:
    world_model: wmt.TrainConfig = field(default_factory=wmt.TrainConfig)
    merpo: MerPOConfig = field(default_factory=MerPOConfig)
    # "merpo" (v1: per-task learners averaged into a task-blind pi_c) or "merpo_v2" (a task
    # embedding inferred from each log's rewards conditions pi_c and Q_meta; `merpo_v2` below)
    algorithm: str = "merpo"
    merpo_v2: MerPOv2Config = field(default_factory=MerPOv2Config)
    adapt_model_steps: int = 500  # theta_j steps on the new task's latents [ours]
    # which theta_j parameters adapt (meta_model.ADAPT_HEADS): all = reward + prior heads (MerPO
    # 2a); reward_offset = the reward head's output bias alone [ours], for logs too small to fit
    # more (experiments/06-adaptation-scope)
    adapt_model_heads: str = "all"
    baseline_steps: int = 0  # pooled pretraining updates of the baselines (0: MerPO's total RAC updates)
    checkpoint_every: int = 50  # meta-steps between MerPO checkpoints
    log_every: int = 10  # meta-steps between scalar logs
    eval_every: int = 0  # meta-steps between sim evaluations of pi_c (0 = off)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {self.algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
        if self.adapt_model_heads not in ADAPT_HEADS:
            raise ValueError(f"adapt_model_heads {self.adapt_model_heads!r}: expected one of {', '.join(ADAPT_HEADS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"world_model": self.world_model.to_dict(), "merpo": self.merpo.to_dict(),
                "merpo_v2": self.merpo_v2.to_dict(),
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ("world_model", "merpo", "merpo_v2")}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        wm = wmt.TrainConfig.from_dict(d.pop("world_model"))
        mp = MerPOConfig.from_dict(d.pop("merpo"))
        v2 = MerPOv2Config.from_dict(d.pop("merpo_v2")) if "merpo_v2" in d else MerPOv2Config()
        return cls(world_model=wm, merpo=mp, merpo_v2=v2, **d)


def _v2_rac(rac: RACConfig, horizon: int | None = None) -> RACConfig:
    """A preset's RAC sizes with MerPO v2's own settings (MerPOv2Config's defaults): the
    advantage-weighted behaviour term, the imagination horizon and the uncertainty penalty."""
    v2 = MerPOv2Config().rac
    return dataclasses.replace(rac, behaviour_weight=v2.behaviour_weight, horizon=horizon or v2.horizon,
                               uncertainty_penalty=v2.uncertainty_penalty)


def v2_meta_budget(v2: MerPOv2Config, meta_steps: int) -> MerPOv2Config:
    """`v2` with `meta_steps` RAC updates of (pi_c, Q_meta), its warm start and the task
    embedding's fit scaled by the same factor: the meta-training as one budget (the presets and
    the learning benchmark's pixel budgets scale it this way)."""
    scale = meta_steps / v2.meta_steps
    return dataclasses.replace(v2, meta_steps=int(meta_steps),
                               warm_start_steps=max(1, round(v2.warm_start_steps * scale)),
                               embedding=dataclasses.replace(v2.embedding,
                                                             fit_steps=max(1, round(v2.embedding.fit_steps * scale))))


# MerPO v2's meta-training on images: 12,000 RAC updates of the conditioned (pi_c, Q_meta), its
# warm start 8,000 BC steps and the task embedding's fit 12,000 steps (4x MerPOv2Config's). On
# the pixel track's reach medium (10 held-out tasks x 3 log draws, one world model) 3,000 / 2,000
# / 3,000 left pi_c at 0.34 zero-shot and MerPO at 0.77; these gave 0.93 and 0.96, paired +0.19
# [+0.03, +0.39] for MerPO on the same world model (experiments/30-pixel-meta-training), for ~11
# more minutes on one core (4x the 3.7 min of experiments/23; 16.0 min measured with the cores shared).
# Not measured on a GPU (the paper preset takes the same counts).
V2_PIXEL_META_STEPS = 12000


def _solved_log_start(v2: MerPOv2Config, mc: MerPOConfig) -> MerPOv2Config:
    """The image presets' start rule: a held-out log whose every episode succeeded is cloned (as
    many steps as the single-task BC baseline takes, `mc.adapt_steps`) instead of adapted from
    pi_c. On the pixel track's reach expert logs MerPO from pi_c solved 0.08 of held-out episodes
    (pi_c 0.03 zero-shot) against BC's 0.89 (experiments/32, 33, 35-start-rule)."""
    return dataclasses.replace(v2, start_rule="solved-log", scratch_bc_steps=mc.adapt_steps)


def preset(name: str) -> RunConfig:
    """tiny: seconds (tests). cpu: the 2-core CPU budget (smaller than the paper, says so).
    paper: MerPO's published loop on LOMPO's model (GPU)."""
    if name == "paper":
        cfg = RunConfig()
        cfg.merpo_v2 = _solved_log_start(v2_meta_budget(MerPOv2Config(), V2_PIXEL_META_STEPS), cfg.merpo)
        return cfg
    if name == "cpu":
        # RAC at MerPO's sizes (3x256, 256+256, 10 CQL actions per source on 256 states) costs
        # ~10x more per update on one core than 3x128, 128+128 and 4 CQL actions on 64 states
        # (`vmerpo bench rac-speed`).
        rac = RACConfig(hidden=128, layers=3, batch_real=128, batch_model=128, cql_n_actions=4, cql_states=64)
        mc = MerPOConfig(rac=rac, iterations=10, steps_per_iteration=20, meta_batch=4,
                         # 2000 RAC steps at batch 128 on the new task (MerPO: 100-500 at
                         # 256): on held-out reach task 40 the closest approach was
                         # 7.1 / 5.4 / 4.1 cm after 300 / 1000 / 2000 (success: 5 cm)
                         inner_steps=5, adapt_steps=2000, warm_start_steps=2000)
        return RunConfig(world_model=wmt.preset("cpu"),
                         # MerPO v2 (algorithm merpo_v2): the same RAC sizes, v2's behaviour term and imagination
                         merpo_v2=_solved_log_start(v2_meta_budget(MerPOv2Config(rac=_v2_rac(rac)),
                                                                   V2_PIXEL_META_STEPS), mc),
                         merpo=mc, adapt_model_steps=500, checkpoint_every=20, log_every=5)
    if name == "demo":  # `make demo`: MerPO v2 at the learning benchmark's pixel smoke budget
        cfg = preset("cpu")
        # 1,000 world-model steps on 2 threads (nothing else runs then; 1.42x 1 thread on the idle
        # 2-core machine), ~4.5 min (experiments/20-pixel-v2-smoke)
        cfg.world_model = dataclasses.replace(cfg.world_model, steps=1000, image_every=250,
                                              checkpoint_every=200, threads=2)
        # v2 at a twelfth of the cpu preset's meta-training (1,000 RAC updates of (pi_c, Q_meta),
        # 667 warm-start and 1,000 embedding steps, ~1.5 min) and 1,000 RAC updates on each new
        # task's log: the pixel smoke budget, where on 4 held-out reach medium tasks it scored 0.49
        # against BC's 0.20 (experiments/20)
        cfg.merpo_v2 = dataclasses.replace(v2_meta_budget(cfg.merpo_v2, 1000), adapt_steps=1000)
        cfg.algorithm = "merpo_v2"
        # with --algorithm merpo (v1): 100 meta-steps, no pi_c warm start and the conservative term
        # on every model state: on the demo's mixed logs (30 % random episodes) the pooled-BC pi_c
        # held the adapted policy 10-14 cm from held-out task 40's goal (experiments/14-demo)
        cfg.merpo = dataclasses.replace(cfg.merpo, iterations=5, warm_start_steps=0,
                                        rac=dataclasses.replace(cfg.merpo.rac, cql_states=0))
        return cfg
    if name == "tiny":
        rac = RACConfig(hidden=32, layers=2, batch_real=32, batch_model=32, cql_n_actions=2,
                        rollout_batch=32, rollout_every=2)
        return RunConfig(world_model=wmt.preset("tiny"),
                         merpo_v2=MerPOv2Config(
                             rac=_v2_rac(rac, horizon=2),
                             embedding=TaskEmbeddingConfig(dim=2, hidden=16, fit_steps=50, batch=64, infer_steps=20,
                                                           members=2),
                             warm_start_steps=10, meta_steps=10, adapt_steps=10),
                         merpo=MerPOConfig(rac=rac, iterations=2, steps_per_iteration=3, meta_batch=2,
                                           inner_steps=2, adapt_steps=10),
                         adapt_model_steps=20, checkpoint_every=2, log_every=1)
    raise ValueError(f"unknown config {name!r}; expected tiny, demo, cpu, paper or a JSON/YAML file")


def load_config(spec: str) -> RunConfig:
    """A preset, or a JSON/YAML file {"preset": "cpu", "merpo": {...}, "world_model": {...}}."""
    if spec in ("tiny", "demo", "cpu", "paper"):
        return preset(spec)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: no such config file (or preset tiny|demo|cpu|paper)")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        d = yaml.safe_load(path.read_text()) or {}
    else:
        d = json.loads(path.read_text())
    base = preset(d.pop("preset", "paper")).to_dict()
    for key in ("world_model", "merpo", "merpo_v2"):
        sub = d.pop(key, {})
        for k, v in sub.items():
            if isinstance(v, dict) and isinstance(base[key].get(k), dict):
                base[key][k].update(v)
            else:
                base[key][k] = v
    unknown = set(d) - set(base)
    if unknown:
        raise ValueError(f"{spec}: unknown config keys {sorted(unknown)}")
    base.update(d)
    return RunConfig.from_dict(base)


def data_hash(store: EpisodeStore) -> str:
    """Identifies the training data: spec, episode structure, tasks and rewards."""
    h = hashlib.sha256(json.dumps(store.spec.to_attrs(), sort_keys=True).encode())
    for arr in (store.episode_ends, store.episode_task, store.read("reward", 0, store.n_frames)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def _computed(cfg: RunConfig) -> dict[str, Any]:
    """The config without where it runs (device, threads, prefetch)."""
    d = cfg.to_dict()
    d.pop("device")
    if d["algorithm"] == "merpo":  # v2's settings compute nothing in a v1 run (and runs before v2 lack them)
        d.pop("merpo_v2")
    d["world_model"] = {k: v for k, v in d["world_model"].items() if k not in wmt.RUNTIME_KEYS}
    return d


def _read_run(run: Path) -> dict[str, Any]:
    path = run / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run}: not a vmerpo run directory (no config.json)")
    info = json.loads(path.read_text())
    if info.get("format") != RUN_FORMAT:
        raise ValueError(f"{run}: config.json is not a vmerpo run (format {info.get('format')!r})")
    if info.get("version") != RUN_VERSION:
        raise ValueError(f"{run}: run format version {info.get('version')} differs from this vmerpo's "
                         f"{RUN_VERSION}; retrain or use the matching vmerpo version")
    return info


def _prepare_dir(run: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (run / "config.json").exists():
            raise FileNotFoundError(f"{run}: nothing to resume (no config.json)")
    elif run.exists() and any(run.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{run}: run directory exists (use --resume or --overwrite)")
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)


def _set_threads(cfg: RunConfig) -> None:
    """The world model's thread count for the whole run: on a shared 2-core machine two torch
    threads per process ran several times slower than one (world_model_train's presets)."""
    if cfg.world_model.threads:
        torch.set_num_threads(cfg.world_model.threads)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# -- vmerpo train ------------------------------------------------------------------------------
def train(data: str, cfg: RunConfig, out: str | os.PathLike, resume: bool = False, overwrite: bool = False,
          world_model: str | None = None, progress: bool = True, log: Callable[[str], None] = print,
          evaluate: Callable[[DeployedPolicy, int], dict[str, float]] | None = None) -> dict[str, Any]:
    """World model (unless `world_model` names a trained one) + MerPO meta-training. Under
    torchrun every rank runs it: the world model data-parallel, MerPO's tasks spread over the
    ranks (`learning/distributed.py`); rank 0 writes the run directory."""
    from learning import distributed

    run = Path(out)
    _set_threads(cfg)
    ctx, _ = distributed.init(wmt.pick_device(cfg.device))  # no-op outside torchrun
    if ctx.enabled and cfg.algorithm == "merpo_v2":
        raise ValueError("algorithm merpo_v2 runs in one process: its meta-learner is one conditioned "
                         "learner over all tasks (start it without torchrun)")
    main = ctx.is_main
    if not main:
        progress, log = False, (lambda m: None)
    store = EpisodeStore.open(data, load="lazy")  # low-dim arrays only; images read on demand
    if store.n_episodes == 0:
        raise ValueError(f"{data}: the store has no episodes")
    train_tasks = store.spec.task_ids("train")
    if not train_tasks:
        raise ValueError(f"{data}: the store's task table marks no task as split 'train' "
                         "(MerPO needs task ids and a meta-train split)")
    present = sorted(set(store.episode_task.tolist()) & set(train_tasks))
    if not present:
        raise ValueError(f"{data}: no episodes of the meta-train tasks {train_tasks}")
    dhash = data_hash(store)
    if resume:
        info = _read_run(run)
        # where it runs may change on resume (a GPU run resumed on a CPU); what it computes may not
        saved, now = _computed(RunConfig.from_dict(info["config"])), _computed(cfg)
        if saved != now:
            diff = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
            raise ValueError(f"{run}: the config differs from the run's config.json in {diff}")
        if info["data_hash"] != dhash:
            raise ValueError(f"{run}: the data differs from the run's ({info['data']}); resume with the same store")
    info = {"format": RUN_FORMAT, "version": RUN_VERSION, "kind": "meta", "config": cfg.to_dict(),
            "data": str(data), "data_hash": dhash, "meta_train_tasks": present,
            "world_model": world_model or str(run / "world_model")}

    def start() -> None:
        _prepare_dir(run, resume, overwrite)
        tmp = run / "config.json.tmp"  # atomic: a kill here must not leave a truncated config
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, run / "config.json")

    distributed.on_main(start)
    t0 = time.perf_counter()

    # 1. the world model, trained once per task family and shared by every method
    if world_model is None:
        wm_dir = run / "world_model"
        wm_resume = resume and (wm_dir / "config.json").exists()
        if not (wm_dir / "model.pt").exists():
            log("[1/3] training the world model")
            wmt.train(data, cfg.world_model, wm_dir, resume=wm_resume, overwrite=not wm_resume,
                      progress=progress, log=log)
        wm_path: str = str(wm_dir)
    else:
        wm_path = world_model
    _, device = distributed.init(wmt.pick_device(cfg.device))
    model, wm_info = wmt.load_world_model(wm_path, str(device))
    slots = wm_info["task_slots"]
    if world_model is not None:  # a shared model trained on another store: same robot, same tasks?
        limits = (model.action_low.cpu().numpy(), model.action_high.cpu().numpy())
        if not (np.allclose(limits[0], store.spec.action_low) and np.allclose(limits[1], store.spec.action_high)):
            raise ValueError(f"{wm_path}: the world model's action limits {limits[0].tolist()} .. "
                             f"{limits[1].tolist()} differ from {data}'s {list(store.spec.action_low)} .. "
                             f"{list(store.spec.action_high)}: train it on logs of the same robot")
        headless = [n for n in present if n not in slots]
        if headless:
            log(f"note: {wm_path} has no task heads for meta-train tasks {headless}; their model "
                "rollouts use phi's heads")

    # 2. latents of every meta-train episode, encoded once
    latents_path = run / "latents.npz"

    def encode() -> None:
        if not latents_path.exists():
            log("[2/3] encoding the logs into latents")
            eps = [i for i in range(store.n_episodes) if int(store.episode_task[i]) in present]
            encode_store(model, store, eps, device=str(device)).save(latents_path)

    distributed.on_main(encode)
    cache = LatentCache.load(latents_path)
    norm = fit_normalizer(cache, store.spec.action_low, store.spec.action_high)
    task_data = {n: transitions(cache, norm, n, device) for n in present}
    gen = torch.Generator().manual_seed(cfg.merpo.seed)
    norm.uncertainty_std = float(np.mean([uncertainty_std(model, task_data[n], norm, slots.get(n, 0), gen)
                                          for n in present]))
    if main:
        (run / "normalizer.json").write_text(json.dumps(norm.to_dict(), indent=1))

    if cfg.algorithm == "merpo_v2":
        return _train_v2(run, cfg, cache, task_data, present, wm_path, t0, main, log, progress, model, norm)

    # 3. MerPO meta-training
    mc = cfg.merpo
    merpo = MerPO(cache.arrays["feat"].shape[1], len(store.spec.action_names), present, mc, device)
    ckpt = run / "checkpoints" / "merpo.pt"
    if resume and ckpt.exists():
        merpo.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True))
        log(f"resuming MerPO from meta-step {merpo.step}")
    if merpo.step == 0 and mc.warm_start_steps:
        log(f"warm start: pi_c by behaviour cloning on the pooled logs ({mc.warm_start_steps} steps)")
        merpo.warm_start(transitions(cache, norm, None, device))
    # one generator per task, seeded per (meta-step, task): exact resume, any number of ranks
    rollout_gens = {n: torch.Generator() for n in present}
    rollouts = {n: model_rollout_fn(model, slots.get(n, 0), mc.rac.horizon, norm, rollout_gens[n])
                for n in present}
    total = mc.iterations * mc.steps_per_iteration
    metrics_path = run / "metrics.jsonl"
    if main and metrics_path.exists():  # lines past the checkpoint are recomputed
        keep = [ln for ln in metrics_path.read_text().splitlines()
                if ln.strip() and json.loads(ln)["step"] <= merpo.step]
        wmt.write_text_atomic(metrics_path, "".join(ln + "\n" for ln in keep))
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    writer = SummaryWriter(str(run / "tb"), purge_step=merpo.step or None) if main else _NoWriter()
    bar = tqdm(total=total, initial=merpo.step, disable=not progress, desc="merpo", unit="meta-step",
               dynamic_ncols=True)
    log("[3/3] MerPO meta-training" + (f" from meta-step {merpo.step}" if merpo.step else ""))
    agg: dict[str, list[float]] = {}
    while merpo.step < total:
        for n, g in rollout_gens.items():
            g.manual_seed(distributed.shard_seed(mc.seed + 1, merpo.step, n))
        stats = merpo.meta_step(task_data, rollouts)
        for k, v in stats.items():
            agg.setdefault(k, []).append(v)
        bar.update(1)
        step = merpo.step
        if step % cfg.log_every == 0 or step == total:
            row = {k: float(np.mean(v)) for k, v in agg.items()}
            agg = {}
            for k, v in row.items():
                writer.add_scalar(f"merpo/{k}", v, step)
            if main and evaluate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == total):
                for k, v in evaluate(meta_policy_module(model, merpo.meta_actor), step).items():
                    writer.add_scalar(f"eval/{k}", v, step)
                    row[f"eval_{k}"] = v
            if main:
                with metrics_path.open("a") as f:
                    f.write(json.dumps({"step": step, **row}) + "\n")
            bar.set_postfix(q=f"{row.get('q', 0):.2f}", gap=f"{row.get('conservative_gap', 0):.2f}",
                            kl=f"{row.get('meta_kl', 0):.3f}")
        if step % cfg.checkpoint_every == 0 or step == total:
            state = merpo.gathered_state_dict()  # every rank's task learners, on rank 0
            if main:
                writer.flush()
                _atomic_save(state, ckpt)
    bar.close()
    writer.close()
    summary = {"meta_steps": merpo.step, "seconds": time.perf_counter() - t0, "tasks": present,
               "world_model": wm_path}
    if main:
        (run / "metrics.json").write_text(json.dumps(summary, indent=1))
    distributed.barrier()
    return summary


def transition_episode_ends(cache: LatentCache, task: int) -> np.ndarray:
    """Where each of `task`'s episodes ends among `transitions(cache, norm, task)`'s rows (an
    episode gives one row per step with a successor, and its last step when terminal)."""
    ends = np.asarray(cache.episode_ends)
    starts = np.concatenate([[0], ends[:-1]])
    term = np.asarray(cache.arrays["terminal"], bool)
    counts = [(t - s) if term[t - 1] else (t - 1 - s)
              for e, (s, t) in enumerate(zip(starts, ends, strict=True)) if cache.episode_task[e] == task]
    return np.cumsum(counts)


def _train_v2(run: Path, cfg: RunConfig, cache: LatentCache, task_data: dict[int, dict[str, torch.Tensor]],
              present: list[int], wm_path: str, t0: float, main: bool, log: Callable[[str], None],
              progress: bool, model, norm: Normalizer) -> dict[str, Any]:
    """MerPO v2 meta-training on the cached latents (`learning.merpo_v2`), imagining with the
    world model's prior ensemble: one checkpoint when done (`--resume` after it changes
    nothing; the world model before it has its own)."""
    ckpt = run / "checkpoints" / "merpo_v2.pt"
    v2 = cfg.merpo_v2
    m = MerPOv2(cache.arrays["feat"].shape[1], cache.arrays["action"].shape[1], present, v2)
    if ckpt.exists():
        m.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        log("MerPO v2 is already meta-trained in this run (nothing to resume)")
        stats: dict[str, Any] = torch.load(ckpt, map_location="cpu", weights_only=True).get("fit_stats", {})
    else:
        log(f"[3/3] MerPO v2 meta-training: task embedding, then {v2.meta_steps} RAC updates of the "
            "conditioned meta-policy on the pooled tasks")
        cpu = {n: {k: v.cpu() for k, v in d.items()} for n, d in task_data.items()}
        ends = {n: transition_episode_ends(cache, n) for n in present}
        imagination = Imagination(copy.deepcopy(model).cpu(), norm, m.obs_dim, v2.rac.horizon)
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        writer = SummaryWriter(str(run / "tb")) if main else None
        # the meta-learner's curve (the v1 loop's metrics.jsonl keys: q, conservative_gap, ...), row by row
        curve = open(run / "metrics.jsonl", "w") if main else None  # noqa: SIM115 - closed in the finally below
        bar = tqdm(total=v2.meta_steps, desc="MerPO v2 meta-policy", unit="update", disable=not (progress and main),
                   dynamic_ncols=True)
        every = max(1, v2.meta_steps // 100)  # ~100 points per curve

        def on_step(i: int, st: dict[str, float]) -> None:
            bar.update(1)
            if i % every == 0 or i == v2.meta_steps:
                if curve is not None:
                    curve.write(json.dumps({"step": i, **st}) + "\n")
                    curve.flush()
                if writer is not None:
                    for k, v in st.items():
                        writer.add_scalar(f"merpo_v2_meta/{k}", v, i)
                bar.set_postfix(q=f"{st.get('q', float('nan')):.1f}", refresh=False)

        try:
            stats = m.fit(cpu, ends, progress=log, imagination=imagination, on_step=on_step)
            if writer is not None:
                for k, v in stats.items():
                    writer.add_scalar(f"merpo_v2/{k}", v, v2.meta_steps)
        finally:
            bar.close()
            if curve is not None:
                curve.close()
            if writer is not None:
                writer.close()
        sd = m.state_dict()
        sd["train_inferences"] = {str(n): i.z.tolist() for n, i in m.train_inferences.items()}
        sd["fit_stats"] = {k: float(v) for k, v in stats.items()}
        if main:
            _atomic_save(sd, ckpt)
    summary = {"algorithm": "merpo_v2", "meta_steps": v2.meta_steps, "seconds": time.perf_counter() - t0,
               "tasks": present, "world_model": wm_path, "fit": stats}
    if main:
        (run / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_merpo_v2(run: Path, cfg: RunConfig, obs_dim: int, act_dim: int, tasks: list[int]) -> MerPOv2:
    m = MerPOv2(obs_dim, act_dim, tasks, cfg.merpo_v2)
    path = run / "checkpoints" / "merpo_v2.pt"
    if not path.exists():
        raise FileNotFoundError(f"{run}: no MerPO v2 checkpoint (checkpoints/merpo_v2.pt); finish `vmerpo train` "
                                "with --resume")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd.pop("train_inferences", None)
    sd.pop("fit_stats", None)
    m.load_state_dict(sd)
    return m


class _NoWriter:
    """TensorBoard on ranks other than 0: nothing is written."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def meta_policy_module(model, actor: TanhGaussianActor) -> DeployedPolicy:
    return DeployedPolicy(task_model(model, 0), ActorMean(actor)).eval()


class ConditionedActorMean(nn.Module):
    """`ActorMean` of a task-conditioned actor with its task's embedding fixed in the graph:
    the deployed policy takes latents only, as every other (the ONNX contract is unchanged)."""

    z: torch.Tensor  # a buffer

    def __init__(self, actor: TanhGaussianActor, z: np.ndarray | list[float]) -> None:
        super().__init__()
        self.actor = actor
        self.register_buffer("z", torch.as_tensor(np.asarray(z, np.float32)))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        z = self.z.to(feat.dtype).expand(feat.shape[0], -1)
        return self.actor.pre_tanh_mean(torch.cat([feat, z], -1))


class ActorMean(nn.Module):
    """The deployed action of a tanh-Gaussian actor: its pre-tanh mean (tanh in the graph)."""

    def __init__(self, actor: TanhGaussianActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.actor.pre_tanh_mean(feat)


# -- vmerpo adapt ------------------------------------------------------------------------------
ADAPT_STARTS = ("own", "pooled", "pooled-actor", "pooled-critic", "scratch")


def start_label(method: str, start: str) -> str:
    """What an adapted run started from, in the words of `vmerpo adapt --start` where it has them:
    a baseline's "own" start is its pooled pretraining ("pretrained"); MerPO's (and the
    meta-policy's) own start is (pi_c, Q_meta) ("meta-policy")."""
    if start != "own":
        return start
    return "meta-policy" if method in META_METHODS else "pretrained"


def adapt(run_dir: str | os.PathLike, data: str, out: str | os.PathLike, overwrite: bool = False,
          task: int | None = None, steps: int | None = None, log: Callable[[str], None] = print,
          progress: bool = True, method: str = "merpo", omega: float | None = None,
          rac_overrides: dict[str, Any] | None = None, start: str = "own",
          device: str | None = None, omega_rule: str | None = None,
          start_rule: str | None = None) -> dict[str, Any]:
    """Meta-test: theta_j from phi on the new task's log, then RAC from pi_c and Q_meta
    (MerPO; `merpo_adp`: omega chosen for this task by `adaptive_omega`), or a baseline
    (`learning.baselines`) from its pooled pretraining, on that log. `omega` replaces the
    run's omega for merpo and rac; `rac_overrides` replaces other RAC settings (ablations);
    `start` (ablations of merpo/merpo_adp): "own" (pi_c, Q_meta), "pooled" (single-task RAC's
    pooled pretraining for both), "pooled-actor" or "pooled-critic" (that one only). The
    KL term still pulls toward pi_c. For the baselines: "own" (their pooled pretraining) or
    "scratch" (the task's log alone, fresh networks: single-task BC and RAC as the learning
    benchmark runs them). `device` (auto|cpu|cuda) replaces the run's, e.g. to adapt
    a GPU-trained run on a machine without one. `omega_rule` replaces a v2 run's
    `merpo_v2.omega_rule` for merpo (`choose_omega`), `start_rule` its `merpo_v2.start_rule`
    (`choose_start`); `omega` overrides both rules (the learner starts from pi_c)."""
    if omega is not None:
        if method not in ("merpo", "rac"):
            raise ValueError(f"--omega applies to merpo and rac, not {method}"
                             + (" (it chooses omega itself)" if method == "merpo_adp" else ""))
        if not 0.0 <= omega <= 1.0:
            raise ValueError(f"--omega {omega}: must be in [0, 1] (1: behaviour prior only, 0: meta-policy only)")
    if start not in ADAPT_STARTS:
        raise ValueError(f"start {start!r}: expected one of {', '.join(ADAPT_STARTS)}")
    if start == "scratch" and method in META_METHODS:
        raise ValueError(f"start=scratch applies to the baselines, not {method} (it starts from pi_c and Q_meta)")
    run = Path(run_dir)
    info = _read_run(run)
    if info["kind"] != "meta":
        raise ValueError(f"{run}: adapt needs a meta-trained run (this one is {info['kind']!r})")
    cfg = RunConfig.from_dict(info["config"])
    v2 = cfg.algorithm == "merpo_v2"
    if v2 and method == "merpo_adp":
        raise ValueError(f"{run} is a merpo_v2 run: merpo_adp is MerPO v1's omega rule; use merpo (with --omega) "
                         "or meta_policy")
    if not v2 and method == "meta_policy":
        raise ValueError(f"{run} is a MerPO v1 run: meta_policy (pi_c at the task's inferred embedding) needs a "
                         "run trained with algorithm merpo_v2")
    if omega_rule is not None:
        if not (v2 and method == "merpo"):
            raise ValueError(f"--omega-rule applies to merpo on a merpo_v2 run, not {method} on a "
                             f"{cfg.algorithm} run")
        cfg.merpo_v2 = dataclasses.replace(cfg.merpo_v2, omega_rule=omega_rule)  # validated there
    if start_rule is not None:
        if not (v2 and method == "merpo"):
            raise ValueError(f"--start-rule applies to merpo on a merpo_v2 run, not {method} on a "
                             f"{cfg.algorithm} run")
        cfg.merpo_v2 = dataclasses.replace(cfg.merpo_v2, start_rule=start_rule)  # validated there
    if v2 and method == "merpo" and start != "own":
        raise ValueError(f"start={start!r} is an ablation of MerPO v1 runs; a merpo_v2 run starts from its pi_c")
    _set_threads(cfg)
    store = EpisodeStore.open(data)
    tasks = sorted(set(store.episode_task.tolist()))
    if task is None:
        if len(tasks) != 1:
            raise ValueError(f"{data}: holds tasks {tasks}; choose one with --task")
        task = tasks[0]
    elif task not in tasks:
        raise ValueError(f"{data}: no episodes of task {task} (tasks present: {tasks})")
    if task in info["meta_train_tasks"]:
        raise ValueError(f"task {task} was a meta-training task of {run}; adapt to a held-out task")
    dev = wmt.pick_device(device or cfg.device)
    out = Path(out)
    _prepare_dir(out, False, overwrite)
    model, _ = wmt.load_world_model(info["world_model"], str(dev))
    train_store_spec = EpisodeStore.open(info["data"], load="lazy").spec
    diff = train_store_spec.compatibility_errors(store.spec)
    if diff:
        raise ValueError(f"{data} does not match the training data of {run}: {diff[0]}")
    norm = Normalizer.from_dict(json.loads((run / "normalizer.json").read_text()))
    mc = cfg.merpo
    rc = method_config(method, mc.rac)
    if omega is not None:
        rc = dataclasses.replace(rc, omega=float(omega))
    if rac_overrides:
        unknown = sorted(set(rac_overrides) - {f.name for f in dataclasses.fields(RACConfig)})
        if unknown:
            raise ValueError(f"unknown RAC setting(s) {unknown}; see learning.rac.RACConfig")
        rc = dataclasses.replace(rc, **rac_overrides)
    anchor = None  # the KL's target, frozen (None: adapt_rac's default, a copy of init_actor)
    init_critic: TwinCritic | None
    m2: MerPOv2 | None = None
    if v2 and method in ("merpo", "meta_policy"):
        m2 = load_merpo_v2(run, cfg, model.cfg.feat_dim, len(store.spec.action_names), info["meta_train_tasks"])
        init_actor, init_critic = m2.meta_actor, m2.meta_critic
    elif method in META_METHODS:
        merpo = MerPO(model.cfg.feat_dim, len(store.spec.action_names), info["meta_train_tasks"], mc, dev)
        ckpt = run / "checkpoints" / "merpo.pt"
        merpo.load_state_dict(torch.load(ckpt, map_location=dev, weights_only=True))
        init_actor, init_critic = merpo.meta_actor, merpo.meta_critic
        if start != "own":  # the KL still pulls toward pi_c
            anchor = copy.deepcopy(merpo.meta_actor).requires_grad_(False)
            pooled_actor, pooled_critic = pretrained_baseline(run, "rac", log=log, progress=progress,
                                                                device=str(dev))
            if start in ("pooled", "pooled-actor"):
                init_actor = pooled_actor
            if start in ("pooled", "pooled-critic"):
                init_critic = pooled_critic
    elif start == "scratch":
        torch.manual_seed(mc.seed)
        init_actor = TanhGaussianActor(model.cfg.feat_dim, len(store.spec.action_names), rc.hidden,
                                       rc.layers).to(dev)
        init_critic = None  # adapt_rac: fresh actor and critic (seeded), no anchor
    else:
        if start != "own":
            raise ValueError(f"start={start!r} applies to merpo and merpo_adp (or scratch to the baselines), "
                             f"not {method}")
        init_actor, init_critic = pretrained_baseline(run, method, log=log, progress=progress,
                                                      device=str(dev))

    eps = [i for i in range(store.n_episodes) if int(store.episode_task[i]) == task]
    log(f"adapting {method} to task {task} from {len(eps)} episodes")
    theta, cache = _shared_task_model(run, cfg, lambda: model, store, task, eps, dev)
    data_j = transitions(cache, norm, task, dev)
    if m2 is not None:
        return _adapt_v2(m2, cfg, run, data, store, task, eps, cache, theta, data_j, norm, out, method, omega,
                         rac_overrides, steps, log)
    omega_choice = None
    if method == "merpo_adp":
        omega_choice = adaptive_omega(theta, cache, anchor if anchor is not None else init_actor, norm, rc.omega,
                                      torch.Generator().manual_seed(mc.seed + 13))
        rc = dataclasses.replace(rc, omega=omega_choice["omega"])
        log(f"MerPO-Adp: omega {omega_choice['omega']:.2f} (imagined return of pi_c "
            f"{omega_choice['meta_policy_return']:.0f} vs the log's actions {omega_choice['behaviour_return']:.0f}; "
            f"less the uncertainty penalty {omega_choice['meta_policy_pessimistic_return']:.0f} vs "
            f"{omega_choice['behaviour_pessimistic_return']:.0f}, z = {omega_choice['z']:.1f})")
    gen = torch.Generator().manual_seed(mc.seed + 7)
    rollout = model_rollout_fn(theta, 0, rc.horizon, norm, gen)
    from tqdm import tqdm

    n_steps = mc.adapt_steps if steps is None else steps
    bar = tqdm(total=n_steps, disable=not progress, desc=f"adapt {method}", unit="step", dynamic_ncols=True)
    if method == "bc":
        actor = copy.deepcopy(init_actor)
        train_bc(actor, data_j, n_steps, rc.batch_real, rc.actor_lr, seed=mc.seed,
                 progress=lambda i, s: bar.update(1))
    else:
        scratch = start == "scratch"
        actor = adapt_rac(None if scratch else init_actor, None if scratch else init_critic, data_j, rollout, rc,
                          n_steps, seed=mc.seed, progress=lambda i, s: bar.update(1), meta_actor=anchor).actor
    bar.close()
    omega_used = rc.omega if method in (*META_METHODS, "rac") else None  # bc, lompo: no regularizer mix
    wmt.save_checkpoint(out / "task_model.pt", theta, None, 0,
                        dataclasses.replace(cfg.world_model, model=theta.cfg), {task: 0})
    _atomic_save({"actor": actor.state_dict(), "rac": rc.to_dict(), "obs_dim": model.cfg.feat_dim,
                  "act_dim": len(store.spec.action_names)}, out / "policy.pt")
    (out / "normalizer.json").write_text(json.dumps(norm.to_dict(), indent=1))
    wmt.write_text_atomic(out / "config.json", json.dumps({
        "format": RUN_FORMAT, "version": RUN_VERSION, "kind": "adapted", "parent": str(run), "task": task, "method": method,
        "omega": omega_used, "omega_choice": omega_choice, "start": start_label(method, start),
        "data": str(data), "data_hash": data_hash(store), "config": cfg.to_dict(),
        "store_spec": store.spec.to_attrs(), "episodes": eps}, indent=1))
    return {"task": task, "method": method, "episodes": len(eps), "adapt_steps": n_steps,
            "omega": omega_used, "out": str(out)}


def _shared_task_model(run: Path, cfg: RunConfig, phi: Callable[[], Any], store: EpisodeStore, task: int,
                       eps: list[int], dev: torch.device) -> tuple[Any, LatentCache]:
    """theta_j (phi adapted to the task's log) and the log's latents. They depend on (run, data,
    task) only, so every method adapted to that log shares them: computed once and kept under
    run/task_models/. `phi` gives the run's world model (called on a miss only)."""
    shared = run / "task_models" / f"{data_hash(store)}_t{task}"
    if (shared / "task_model.pt").exists() and (shared / "latents.npz").exists():
        theta, _ = wmt.load_world_model(shared / "task_model.pt", str(dev))
        return theta, LatentCache.load(shared / "latents.npz")
    model = phi()
    cache = encode_store(model, store, eps, device=str(dev))
    theta = adapt_model(model, cache, steps=cfg.adapt_model_steps, eta=cfg.world_model.eta, seed=cfg.merpo.seed,
                        heads=cfg.adapt_model_heads)
    shared.mkdir(parents=True, exist_ok=True)
    cache.save(shared / "latents.npz")
    wmt.save_checkpoint(shared / "task_model.pt", theta, None, 0,
                        dataclasses.replace(cfg.world_model, model=theta.cfg), {task: 0})
    return theta, cache


def task_model_and_latents(run_dir: str | os.PathLike, data: str, task: int,
                           device: str = "cpu") -> tuple[Any, LatentCache, Normalizer, EpisodeStore]:
    """For learners outside `adapt` (the learning benchmark's d3rlpy peer): theta_j and the
    latents of `data`'s episodes of `task` under a meta-trained run (shared with `adapt`), the
    run's normalizer and the store."""
    run = Path(run_dir)
    info = _read_run(run)
    if info["kind"] != "meta":
        raise ValueError(f"{run}: needs a meta-trained run (this one is {info['kind']!r})")
    if task in info["meta_train_tasks"]:
        raise ValueError(f"task {task} was a meta-training task of {run}; choose a held-out task")
    cfg = RunConfig.from_dict(info["config"])
    store = EpisodeStore.open(data)
    diff = EpisodeStore.open(info["data"], load="lazy").spec.compatibility_errors(store.spec)
    if diff:
        raise ValueError(f"{data} does not match the training data of {run}: {diff[0]}")
    eps = [i for i in range(store.n_episodes) if int(store.episode_task[i]) == task]
    if not eps:
        raise ValueError(f"{data}: no episodes of task {task}")
    dev = torch.device(device)
    theta, cache = _shared_task_model(run, cfg, lambda: wmt.load_world_model(info["world_model"], str(dev))[0],
                                      store, task, eps, dev)
    norm = Normalizer.from_dict(json.loads((run / "normalizer.json").read_text()))
    return theta, cache, norm, store


def log_success_of(store: EpisodeStore, eps: Sequence[int]) -> float | None:
    """The share of episodes `eps` that succeeded, over those whose success is known (a
    recorder take interrupted before its success flag has provenance success_known False);
    None when the store records no success or none of them is known."""
    if "episode_success" in store.absent or not len(eps):
        return None
    succ = np.asarray(store.episode_success, bool)[list(eps)]
    if "success_known" in store.provenance_names():
        vals = store.provenance("success_known")[list(eps)]
        known = np.array([not (isinstance(v, (bool, np.bool_)) and not bool(v)) for v in vals], bool)
        succ = succ[known]
    return float(succ.mean()) if len(succ) else None


def _adapt_v2(m2: MerPOv2, cfg: RunConfig, run: Path, data_path: str, store: EpisodeStore, task: int, eps: list[int],
              cache: LatentCache, theta, data_j: dict[str, torch.Tensor], norm: Normalizer, out: Path, method: str,
              omega: float | None, rac_overrides: dict[str, Any] | None, steps: int | None,
              log: Callable[[str], None]) -> dict[str, Any]:
    """MerPO v2 at meta-test: the task's embedding from its log's rewards, then pi_c at it
    (`meta_policy`) or MerPO's RAC from (pi_c, Q_meta) on the log (`merpo`)."""
    v2 = cfg.merpo_v2
    data = {k: v.cpu() for k, v in data_j.items()}
    inf: TaskInference = m2.infer(data, transition_episode_ends(cache, task), seed=v2.seed)
    if inf.fallback:
        log(f"task inference: {inf.fallback}")
    else:
        log(f"task inference: embedding {np.round(inf.z, 2).tolist()} (posterior spread "
            f"{float(np.linalg.norm(inf.std)):.2f}, reward error {inf.reward_mse:.3f})")
    log_success = log_success_of(store, eps)
    # a solved log's clone takes the single-task BC baseline's steps (`steps` included): with the
    # baseline's seed (below) and the run's RAC sizes it is that baseline's learner
    v2 = dataclasses.replace(v2, scratch_bc_steps=cfg.merpo.adapt_steps if steps is None else steps)
    if omega is None:
        start, omega, why = choose_learner(v2, log_success)
    else:
        start, why = "meta", f"from (pi_c, Q_meta), omega {float(omega)} (asked for)"
    scratch = method == "merpo" and start == "scratch"  # the meta-policy itself has no start
    rc = dataclasses.replace(v2.rac, omega=float(omega))
    if rac_overrides:
        unknown = sorted(set(rac_overrides) - {f.name for f in dataclasses.fields(RACConfig)})
        if unknown:
            raise ValueError(f"unknown RAC setting(s) {unknown}; see learning.rac.RACConfig")
        rc = dataclasses.replace(rc, **rac_overrides)
    n_steps = v2.adapt_steps if steps is None else steps
    if method == "meta_policy":
        actor, n_steps, omega_used = m2.meta_actor, 0, None
    else:
        m2.cfg = dataclasses.replace(v2, rac=rc)
        m2.attach(Imagination(copy.deepcopy(theta).cpu(), norm, m2.obs_dim, rc.horizon), m2.trained_uncertainty_std,
                  m2.trained_uncertainty_reference)
        if scratch:
            n_steps = v2.scratch_rac_steps
        log(f"adapting MerPO v2 to task {task}: {n_steps} RAC steps {why}"
            + (f", imagining {rc.horizon} steps (lambda_u {rc.uncertainty_penalty})" if m2.imagination and n_steps else ""))
        # from scratch: the single-task BC baseline's seed, so a solved log gets that baseline's learner
        seed = cfg.merpo.seed if scratch else v2.seed + task
        actor = m2.adapt([data], [inf], [seed], steps=n_steps, omega=rc.omega, start=start)[0].actor
        omega_used = rc.omega
    wmt.save_checkpoint(out / "task_model.pt", theta, None, 0,
                        dataclasses.replace(cfg.world_model, model=theta.cfg), {task: 0})
    _atomic_save({"actor": actor.state_dict(), "rac": rc.to_dict(), "obs_dim": m2.obs_dim + m2.zdim,
                  "act_dim": m2.act_dim, "z": inf.z.tolist()}, out / "policy.pt")
    (out / "normalizer.json").write_text(json.dumps(norm.to_dict(), indent=1))
    inference = {"z": inf.z.tolist(), "std": inf.std.tolist(), "reward_mse": inf.reward_mse, "fallback": inf.fallback}
    wmt.write_text_atomic(out / "config.json", json.dumps({
        "format": RUN_FORMAT, "version": RUN_VERSION, "kind": "adapted", "parent": str(run), "task": task,
        "method": method, "algorithm": "merpo_v2", "omega": omega_used,
        "start": "scratch" if scratch else start_label(method, "own"),
        "omega_rule": None if omega_used is None else {"rule": v2.omega_rule, "start_rule": v2.start_rule,
                                                       "log_success": log_success, "why": why},
        "task_inference": inference,
        "data": str(data_path), "data_hash": data_hash(store), "config": cfg.to_dict(),
        "store_spec": store.spec.to_attrs(), "episodes": eps}, indent=1))
    return {"task": task, "method": method, "episodes": len(eps), "adapt_steps": n_steps, "omega": omega_used,
            "start": "scratch" if scratch else "meta", "clone_steps": v2.scratch_bc_steps if scratch else 0,
            "task_inference": inference, "out": str(out)}


def pretrained_baseline(run_dir: str | os.PathLike, method: str, log: Callable[[str], None] = print,
                        progress: bool = True, device: str | None = None
                        ) -> tuple[TanhGaussianActor, TwinCritic | None]:
    """A baseline's learner pretrained on the run's pooled meta-train latents, with phi's
    heads for model rollouts; trained on first use and kept in RUN/baselines/METHOD.pt."""
    run = Path(run_dir)
    info = _read_run(run)
    cfg = RunConfig.from_dict(info["config"])
    _set_threads(cfg)
    mc = cfg.merpo
    rc = method_config(method, mc.rac)
    path = run / "baselines" / f"{method}.pt"
    dev = wmt.pick_device(device or cfg.device)
    cache = LatentCache.load(run / "latents.npz")
    obs_dim, act_dim = cache.arrays["feat"].shape[1], cache.arrays["action"].shape[1]
    actor = TanhGaussianActor(obs_dim, act_dim, rc.hidden, rc.layers).to(dev)
    critic = None if method == "bc" else TwinCritic(obs_dim, act_dim, rc.hidden, rc.layers).to(dev)
    if path.exists():
        blob = torch.load(path, map_location=dev, weights_only=True)
        actor.load_state_dict(blob["actor"])
        if critic is not None:
            critic.load_state_dict(blob["critic"])
        return actor, critic
    norm = Normalizer.from_dict(json.loads((run / "normalizer.json").read_text()))
    pooled = transitions(cache, norm, None, dev)
    model, _ = wmt.load_world_model(info["world_model"], str(dev))
    rollout = model_rollout_fn(model, 0, rc.horizon, norm, torch.Generator().manual_seed(mc.seed + 3))
    n = cfg.baseline_steps or mc.iterations * mc.steps_per_iteration * mc.meta_batch * mc.inner_steps
    log(f"pretraining the {method} baseline on the pooled meta-train logs ({n} updates)")
    from tqdm import tqdm

    bar = tqdm(total=n, disable=not progress, desc=f"pretrain {method}", unit="step", dynamic_ncols=True)
    a, c = pretrain(method, pooled, rollout, mc.rac, n, seed=mc.seed, progress=lambda i, s: bar.update(1))
    bar.close()
    actor.load_state_dict(a.state_dict())
    if critic is not None and c is not None:
        critic.load_state_dict(c.state_dict())
    _atomic_save({"actor": actor.state_dict(), "critic": None if critic is None else critic.state_dict(),
                  "method": method, "steps": n}, path)
    return actor, critic


# -- the deployed policy of a run --------------------------------------------------------------
def load_policy(run_dir: str | os.PathLike, device: str = "cpu") -> tuple[DeployedPolicy, PolicySpec]:
    """An adapted run (or a meta run: pi_c on phi) -> the deployed torch module and its spec."""
    run = Path(run_dir)
    info = _read_run(run)
    if info["kind"] == "adapted":
        theta, _ = wmt.load_world_model(run / "task_model.pt", device)
        blob = torch.load(run / "policy.pt", map_location=device, weights_only=True)
        rc = RACConfig(**blob["rac"])
        actor = TanhGaussianActor(blob["obs_dim"], blob["act_dim"], rc.hidden, rc.layers).to(device)
        actor.load_state_dict(blob["actor"])
        store_spec = StoreSpec.from_attrs(info["store_spec"])
        head: nn.Module = (ConditionedActorMean(actor, blob["z"]) if "z" in blob else ActorMean(actor)).to(device)
        module = DeployedPolicy(theta, head).eval()
        task = info["task"]
    else:
        cfg = RunConfig.from_dict(info["config"])
        model, _ = wmt.load_world_model(info["world_model"], device)
        if cfg.algorithm == "merpo_v2":  # pi_c at the meta-train tasks' mean embedding
            m2 = load_merpo_v2(run, cfg, model.cfg.feat_dim, model.cfg.action_dim, info["meta_train_tasks"])
            module = DeployedPolicy(task_model(model, 0), ConditionedActorMean(
                m2.meta_actor, np.zeros(m2.zdim, np.float32)).to(device)).eval()
        else:
            merpo = MerPO(model.cfg.feat_dim, model.cfg.action_dim, info["meta_train_tasks"], cfg.merpo, device)
            ckpt = run / "checkpoints" / "merpo.pt"
            merpo.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True))
            module = meta_policy_module(model, merpo.meta_actor)
        store_spec = EpisodeStore.open(info["data"], load="lazy").spec
        task = None
    return module, policy_spec(module, store_spec, run.name, info["data_hash"], task)


def policy_spec(module: DeployedPolicy, store_spec: StoreSpec, run_id: str, data_hash: str,
                task: int | None) -> PolicySpec:
    """The ONNX contract's spec of a deployed module trained on a store with `store_spec`."""
    wm_cfg = module.world_model.cfg
    return PolicySpec(
        image_size=store_spec.image_size, action_names=store_spec.action_names,
        action_low=store_spec.action_low, action_high=store_spec.action_high,
        deter_size=wm_cfg.deter, stoch_size=wm_cfg.stoch, action_type=store_spec.action_type,
        action_units=store_spec.action_units, action_frame=store_spec.action_frame,
        gripper_channel=store_spec.gripper_channel, hold_action=store_spec.hold_action,
        state_names=store_spec.state_names if wm_cfg.state_dim else [], uses_state=bool(wm_cfg.state_dim),
        camera=store_spec.camera, control_hz=store_spec.control_hz, run_id=run_id,
        data_hash=data_hash, env={**store_spec.env, "task": task},
        vmerpo_version=_version())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vmerpo")
    except PackageNotFoundError:
        return "0+unknown"


class TorchPolicy:
    """A run's deployed module in torch, with PolicyRuntime's interface: `vmerpo eval
    --policy RUN_DIR` runs the same graph that `vmerpo export` writes."""

    def __init__(self, run_dir: str | os.PathLike | None, device: str = "cpu",
                 module: DeployedPolicy | None = None, spec: PolicySpec | None = None) -> None:
        """From a run directory, or from a module and its spec (periodic evaluations)."""
        if module is not None and spec is not None:
            self.module, self.spec = module, spec
        else:
            if run_dir is None:
                raise TypeError("TorchPolicy needs a run directory, or a module and its spec")
            self.module, self.spec = load_policy(run_dir, device)
        self.device = torch.device(device)
        s = self.spec
        self._low = torch.tensor(s.action_low)
        self._high = torch.tensor(s.action_high)
        self.reset()

    def check_compatible(self, **expected: Any) -> None:
        diff = self.spec.mismatches(**expected)
        if diff:
            raise ValueError("policy run does not match this configuration: " + "; ".join(diff))

    def reset(self) -> None:
        s = self.spec
        self.h = torch.zeros(1, s.deter_size, device=self.device)
        self.z = torch.zeros(1, s.stoch_size, device=self.device)
        self.prev = torch.zeros(1, s.action_dim, device=self.device)

    @torch.no_grad()
    def act(self, image: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        s = self.spec
        s.check_observation(image, state)
        st = torch.as_tensor(np.asarray(state, np.float32))[None] if s.uses_state else None
        a, self.h, self.z = self.module(torch.from_numpy(image)[None].to(self.device), self.prev, self.h, self.z, st)
        out = torch.minimum(torch.maximum(a[0].cpu(), self._low), self._high).numpy().astype(np.float32)
        self.prev = torch.from_numpy(out)[None].to(self.device)
        return out

    def set_applied_action(self, applied: np.ndarray) -> None:
        self.prev = torch.as_tensor(np.asarray(applied, np.float32).reshape(1, -1), device=self.device)


def parity_check(run_dir: str | os.PathLike, onnx_path: str | os.PathLike, steps: int = 100) -> float:
    """Max |onnxruntime - torch| action over a closed-loop pass over recorded frames of the
    run's data (both fed the same applied actions)."""
    from learning.runtime.policy_runtime import PolicyRuntime

    info = _read_run(Path(run_dir))
    store = EpisodeStore.open(info["data"], load="lazy")
    images = store.read("image", 0, min(steps, store.n_frames))
    states = store.read("state", 0, min(steps, store.n_frames))
    torch_policy = TorchPolicy(run_dir)
    rt = PolicyRuntime(onnx_path, providers="cpu")
    worst = 0.0
    for img, st in zip(images, states, strict=True):
        a_rt = rt.act(img, st if rt.spec.uses_state else None)
        a_t = torch_policy.act(img, st if rt.spec.uses_state else None)
        worst = max(worst, float(np.abs(a_rt - a_t).max()))
        applied = a_rt  # both filters are conditioned on the same applied action
        rt.set_applied_action(applied)
        torch_policy.set_applied_action(applied)
    return worst
