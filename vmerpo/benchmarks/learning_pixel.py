"""The pixel track of `vmerpo bench learning`: images through the shared world model (the product).

Per world-model seed, one world model (trained once on the mixed-quality meta-train logs) is
shared by every method and quality. Per quality:

    collect   meta-train logs of the first N train tasks, and per draw a 5-episode log of each
              held-out task (the same seeds as the state track: `learning.log_seeds`)
    train     `vmerpo train --world-model WM --algorithm merpo_v2`: latents + MerPO v2 meta-training
              (imagining with WM); with the opt-in methods also v1, v2 without the embedding
              (merpo_no_embedding), v2 at lambda_u 0 (merpo_no_uncertainty_meta) and v2 penalising
              only the disagreement above the real rows' 90th percentile (merpo_uncertainty_excess)
    adapt     every method to every (held-out task, draw) log (`vmerpo adapt --method`); BC and
              single-task RAC learn from the log alone (`start=scratch`), LOMPO from its pooled
              pretraining, MerPO from (pi_c, Q_meta) at the embedding inferred from the log;
              meta_policy is pi_c at that embedding with no adaptation; ablations: omega 0 and 1,
              no uncertainty penalty in the adaptation's imagined transitions (METHOD_PLAN), and
              the opt-in runs' MerPO (without the embedding; without the penalty anywhere; with the
              penalty on the excess disagreement only)
    peer      d3rlpy's IQL on the v2 run's meta-train latents, zero-shot (iql_pooled) and fine-tuned
              on each log's latents (iql_finetuned), behind the log's world-model filter, as ONNX
    evaluate  each adapted policy on its task, the same starts for every method and draw

Each stage's outputs are kept under --out/pixel and reused by --resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from vmerpo.benchmarks.learning_state import OMEGA_SWEEP
from vmerpo.commands.options import AIMS, add_goal_pin, experimental_group

PIXEL_METHODS = ("bc", "rac", "lompo", "merpo", "meta_policy", "merpo_omega0", "merpo_omega04", "merpo_omega1",
                 "merpo_no_uncertainty", "iql_finetuned")
# the mechanism ablations: on the qualities `--ablations` names (default medium, random_heavy); the
# opt-in ones below run only where --methods names them, on every quality it runs
PIXEL_ABLATIONS = ("merpo_omega0", "merpo_omega04", "merpo_omega1", "merpo_no_uncertainty")
# opt-in: MerPO v1 (its own meta-training runs) and the ablations without the task embedding or
# without the uncertainty penalty in meta-training too (each a second v2 meta-training per
# quality and world model)
PIXEL_EXTRA_METHODS = ("merpo_v1", "merpo_adp", "meta_policy_v1", "merpo_no_embedding", "merpo_no_uncertainty_meta",
                       "merpo_uncertainty_excess", "iql_pooled")
# the pooled offline-RL peer (d3rlpy IQL, `vmerpo.benchmarks.peer`) on the same latent features:
# trained on the v2 run's meta-train latents, zero-shot or fine-tuned on the held-out log's
# latents, deployed behind the unit's world-model filter and exported to ONNX (`_peer`)
PEER_METHODS = ("iql_pooled", "iql_finetuned")
SCRATCH = ("bc", "rac")  # single-task: the held-out log alone, fresh networks
# method -> (meta-training run kind, `vmerpo adapt --method`, adapt keyword arguments). Run kinds:
# "v2" MerPO v2 (`--algorithm merpo_v2`; the baselines use its latents and pooled data too),
# "v2_noemb" v2 without the task embedding, "v2_nounc" v2 without the uncertainty penalty (lambda_u
# 0 in meta-training, and so at adaptation), "v2_excess" v2 whose penalty acts only on the
# disagreement above the real rows' EXCESS_QUANTILE (meta-training and adaptation), "v1" MerPO as
# published
METHOD_PLAN: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bc": ("v2", "bc", {"start": "scratch"}),
    "rac": ("v2", "rac", {"start": "scratch"}),
    "lompo": ("v2", "lompo", {}),
    "merpo": ("v2", "merpo", {}),
    "meta_policy": ("v2", "meta_policy", {}),
    **{m: ("v2", "merpo", {"omega": w}) for m, w in OMEGA_SWEEP.items()},  # merpo_omega0 / 04 / 1
    "merpo_no_uncertainty": ("v2", "merpo", {"rac_overrides": {"uncertainty_penalty": 0.0}}),
    "merpo_no_embedding": ("v2_noemb", "merpo", {}),
    "merpo_no_uncertainty_meta": ("v2_nounc", "merpo", {}),
    "merpo_uncertainty_excess": ("v2_excess", "merpo", {}),
    "merpo_v1": ("v1", "merpo", {}),
    "merpo_adp": ("v1", "merpo_adp", {}),
    "meta_policy_v1": ("v1", "merpo", {"steps": 0}),
}
RUN_KINDS = tuple(dict.fromkeys(kind for kind, _, _ in METHOD_PLAN.values()))  # v2, v2_noemb, v2_nounc, v2_excess, v1
EXCESS_QUANTILE = 0.9  # v2_excess: MerPOv2Config.uncertainty_quantile
ZERO_SHOT = ("meta_policy", "meta_policy_v1", "iql_pooled")  # no policy update on the log
EVAL_SEED = 1000  # as the state track: the same starts for every method and draw


@dataclass(frozen=True)
class Budget:
    """The pixel track's learner budget (the design, tasks and draws, is `learning.Design`)."""

    config: str  # `vmerpo train` preset
    wm_steps: int  # world-model steps (0: the preset's)
    wm_seeds: int  # independent shared world models (and MerPO runs on each)
    adapt_steps: int = 0  # RAC/BC steps on each small log (0: the preset's)
    meta_iterations: int = 0  # MerPO v1 iterations (0: the preset's); baselines pretrain as many updates
    v2_meta_steps: int = 0  # MerPO v2 RAC updates of (pi_c, Q_meta) (0: the preset's); warm start and
    # the embedding's fit scale with it
    wm_preset: str = ""  # world-model preset ("": the `config` preset's; --world-model picks another)
    meta_critic: str = "polyak"  # Q_meta: polyak mean of the task critics (MerPO) or "fit" (--meta-critic)
    goal_pin: bool = False  # draw the pin under the goal marker in logs and evaluations (--goal-pin)
    pooled_reward_scale: float = 0.0  # shared world model's pooled reward head weight (--pooled-reward)
    peer_steps: int = 3000  # d3rlpy IQL on the pooled meta-train latents (as the state track)
    peer_finetune_steps: int = 200  # and on each held-out log's latents


BUDGETS = {
    "smoke": Budget(config="cpu", wm_steps=1000, wm_seeds=1, meta_iterations=5, adapt_steps=1000,
                    v2_meta_steps=1000),
    "full": Budget(config="cpu", wm_steps=0, wm_seeds=2),
    "power": Budget(config="cpu", wm_steps=0, wm_seeds=1),  # full's learners; the units are the point
}


def add_pixel_options(p: argparse.ArgumentParser) -> None:
    exp = experimental_group(p)
    add_goal_pin(exp, note="pixel track; an --out collected otherwise is refused")
    exp.add_argument("--world-model", metavar="PRESET", choices=("cpu", "bench", "paper"),
                     help="pixel track: world-model preset of the shared model (default: the budget's, cpu; bench: "
                          "the ensemble with random prior functions that the world-model benchmark uses)")
    exp.add_argument("--meta-critic", choices=("polyak", "fit"),
                     help="pixel track: Q_meta of MerPO: polyak (default, MerPO: the polyak mean of the task "
                          "critics) or fit (trained as pi_c's own conservative critic)")
    exp.add_argument("--pooled-reward", type=float, metavar="SCALE",
                     help="pixel track: train the shared world model with a pooled reward head of this loss weight "
                          "(WorldModelConfig.pooled_reward_scale, default 0 = off)")
    exp.add_argument("--wm-seeds", type=int, metavar="N", help="pixel track: shared world models (default: the "
                                                               "budget's, smoke 1, full 2 (1 without a GPU), power 1)")


# `full` without a GPU: the design's four qualities on two world models take about 10 h on the
# 2-core CPU (experiments/32: one quality on one world model, 117 min), so there `full` runs
# medium, the quality the targets are read on, on one world model unless told otherwise
# (--qualities, --wm-seeds); with a GPU it is the whole design.
CPU_FULL_QUALITIES = ("medium",)


def on_gpu(args: argparse.Namespace) -> bool:
    from learning.world_model_train import pick_device

    return pick_device(args.device).type == "cuda"


def cpu_full(args: argparse.Namespace) -> bool:
    """Whether this is a `full` pixel run narrowed to what the CPU can do (see CPU_FULL_QUALITIES)."""
    return args.track == "pixel" and args.budget == "full" and not on_gpu(args)


def pixel_budget(args: argparse.Namespace) -> Budget:
    budget = BUDGETS[args.budget]
    if cpu_full(args):
        budget = replace(budget, wm_seeds=1)
    if args.budget in ("full", "power") and on_gpu(args):
        budget = replace(budget, config="paper")
    if args.world_model:
        budget = replace(budget, wm_preset=args.world_model)
    if args.meta_critic:
        budget = replace(budget, meta_critic=args.meta_critic)
    if args.pooled_reward is not None:
        if not args.pooled_reward >= 0:
            raise ValueError(f"--pooled-reward {args.pooled_reward}: must be 0 or more")
        budget = replace(budget, pooled_reward_scale=float(args.pooled_reward))
    if getattr(args, "learner_steps", None) is not None:  # --learner-steps: MerPO v2's meta-training, the peer's
        budget = replace(budget, v2_meta_steps=int(args.learner_steps), peer_steps=int(args.learner_steps))
    if args.wm_seeds is not None:
        if args.wm_seeds < 1:
            raise ValueError(f"--wm-seeds {args.wm_seeds}: must be at least 1")
        budget = replace(budget, wm_seeds=args.wm_seeds)
    if args.goal_pin:
        from sim.envs import check_goal_pin

        budget = replace(budget, goal_pin=check_goal_pin(args.family if args.family.endswith("-v3")
                                                         else f"{args.family}-v3", True))
    return budget


def pixel_settings(args: argparse.Namespace) -> dict[str, Any]:
    from learning.merpo_train import preset

    budget = pixel_budget(args)
    # MerPO's start rule comes with the preset the v2 runs are made from: an --out made under
    # another (or before the rule: no key) is refused, so a resume that adds a quality or a
    # world-model seed cannot mix learners
    return {"pixel_budget": asdict(budget), "device": args.device,
            "start_rule": preset(budget.config).merpo_v2.start_rule}


def run_track(out: Path, family: str, design, heldout: list[int], train: list[int],
              methods_by_quality: dict[str, list[str]],
              args) -> tuple[list[dict], dict[tuple[str, int, int], float], dict[str, float]]:
    from vmerpo.benchmarks.learning import log_seeds

    budget = pixel_budget(args)
    out = out / "pixel"
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    aim = AIMS[args.aim]
    qualities = list(design.qualities)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stores = _collect(out / "data", family, qualities, design, budget, heldout, train, aim, args.hand_init_noise,
                      log_seeds, progress)
    timings["collect_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    wm_dirs = [_world_model(out, stores["mixed"][0], budget, args.device, args.workers, progress, s)
               for s in range(budget.wm_seeds)]
    timings["world_model_s"] = time.perf_counter() - t

    t = time.perf_counter()
    keys = [(q, s, k) for q in qualities for s in range(budget.wm_seeds)
            for k in sorted({_run_kind(m) for m in methods_by_quality[q]})]
    todo = [(str(out), q, s, k, stores[q][0], wm_dirs[s], budget, args.device, args.seed) for q, s, k in keys]
    runs = dict(zip(keys, _pool_map(_meta_train, todo, args.workers, "meta-train", progress), strict=True))
    timings["meta_train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    jobs = _adapt_all(out, runs, stores, heldout, design.draws, methods_by_quality, budget, args.workers, progress)
    timings["adapt_s"] = time.perf_counter() - t
    if any(set(PEER_METHODS) & set(ms) for ms in methods_by_quality.values()):
        t = time.perf_counter()
        jobs += _peer_all(out, runs, stores, heldout, design.draws, methods_by_quality, budget, args.seed,
                          args.workers, progress)
        timings["peer_s"] = time.perf_counter() - t

    t = time.perf_counter()
    evals = _evaluate(out, family, jobs, design.eval_episodes, args.hand_init_noise, budget.goal_pin, args.workers,
                      progress)
    timings["evaluate_s"] = time.perf_counter() - t
    behaviour = {}
    for q in qualities:
        for d, small in enumerate(stores[q][1]):
            for task, rate in _behaviour_success(small).items():
                behaviour[(q, task, d)] = rate
    return evals, behaviour, timings


def _run_kind(method: str) -> str:
    """The meta-training run a method needs (the peer: the v2 run's latents and normalizer)."""
    return "v2" if method in PEER_METHODS else METHOD_PLAN[method][0]


# -- stages ------------------------------------------------------------------------------------
def _collect(data: Path, family: str, qualities: list[str], design, budget: Budget, heldout: list[int],
             train_ids: list[int], aim: bool, hand_init_noise: float, log_seeds, progress: bool
             ) -> dict[str, tuple[str, list[str]]]:
    """{quality: (meta-train store, [held-out store of each draw])} (the mixed logs always: the
    world model trains on them)."""
    from sim.collect import CollectConfig, collect

    stores = {}
    for q in sorted(set(qualities) | {"mixed"}):
        seeds = log_seeds(q, design.draws)
        meta = data / f"{q}.zarr"
        smalls = [data / f"{q}_heldout_d{d}.zarr" for d in range(design.draws)]
        plan = [(meta, train_ids, design.episodes_per_task, seeds["train"])]
        plan += [(sm, list(heldout), design.heldout_episodes, seeds["heldout"][d]) for d, sm in enumerate(smalls)]
        for path, tasks, eps, seed in plan:
            if (path / ".complete").exists():
                continue
            cfg = CollectConfig(family=family, out=str(path), tasks=tasks, episodes_per_task=eps, quality=q,
                                seed=seed, hand_init_noise=hand_init_noise, goal_pin=budget.goal_pin, aim=aim,
                                workers=2, resume=path.exists())
            collect(cfg, progress=progress)
            (path / ".complete").write_text("")
        stores[q] = (str(meta), [str(sm) for sm in smalls])
    return stores


def _world_model(out: Path, data: str, budget: Budget, device: str, workers: int, progress: bool,
                 seed: int = 0) -> str:
    from learning import world_model_train as wmt
    from learning.merpo_train import preset

    wm_dir = out / ("world_model" if seed == 0 else f"world_model_s{seed}")
    # Which preset this --out's shared model is (a killed training's resume checks its config
    # itself; a finished model from before the marker existed is the budget's preset).
    marker = wm_dir / "bench_world_model.json"
    want = budget.wm_preset or budget.config
    if (wm_dir / "model.pt").exists():
        have = json.loads(marker.read_text()) if marker.exists() else {"preset": budget.config}
        if have["preset"] != want:
            raise ValueError(f"{out} holds a world model of preset {have['preset']!r}, not {want!r}: "
                             f"use another --out for --world-model {want}")
        if have.get("pooled_reward_scale", 0.0) != budget.pooled_reward_scale:
            raise ValueError(f"{out} holds a world model with pooled reward weight "
                             f"{have.get('pooled_reward_scale', 0.0)}, not {budget.pooled_reward_scale}: "
                             "use another --out for --pooled-reward")
        return str(wm_dir)
    cfg = wmt.preset(budget.wm_preset) if budget.wm_preset else preset(budget.config).world_model
    if budget.pooled_reward_scale:
        cfg.model.pooled_reward_scale = budget.pooled_reward_scale
    cfg.device = device
    # Nothing else runs in this stage, so it takes the workers' cores: 2 threads trained the cpu
    # preset 1.42x faster than 1 on the idle 2-core machine (3.64 vs 2.57 steps/s).
    cfg.threads = max(cfg.threads, workers)
    if budget.wm_steps:
        cfg.steps = budget.wm_steps
    cfg.seed = seed
    wmt.train(data, cfg, wm_dir, resume=(wm_dir / "config.json").exists(),
              overwrite=not (wm_dir / "config.json").exists(), progress=progress)
    marker.write_text(json.dumps({"preset": want, "pooled_reward_scale": budget.pooled_reward_scale}))
    return str(wm_dir)


def _pool_map(fn, jobs: list, workers: int, desc: str, progress: bool) -> list:
    """fn over jobs in `workers` fresh processes (spawn: no inherited torch/MuJoCo state)."""
    import multiprocessing as mp

    from tqdm import tqdm

    out = []
    bar = tqdm(total=len(jobs), disable=not progress, desc=desc, unit="job", dynamic_ncols=True)
    with ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn")) as pool:
        for r in pool.map(fn, jobs):
            out.append(r)
            bar.update(1)
    bar.close()
    return out


def meta_train_config(kind: str, budget: Budget, device: str, seed: int):
    """The `vmerpo train` config of one meta-training run kind (METHOD_PLAN): the budget's
    preset; v2 kinds at the budget's meta-training steps, `v2_noemb` without the task embedding,
    `v2_nounc` at lambda_u 0, `v2_excess` penalising only the disagreement above the real rows'
    EXCESS_QUANTILE (the run's config and checkpoint carry it to every adaptation of the run)."""
    from learning.merpo_train import preset, v2_meta_budget

    if kind not in RUN_KINDS:
        raise ValueError(f"meta-training run kind {kind!r}: expected one of {', '.join(RUN_KINDS)}")
    cfg = preset(budget.config)
    cfg.device = device
    cfg.merpo.seed = seed
    if kind != "v1":
        v2 = cfg.merpo_v2
        v2.seed = seed
        v2.use_embedding = kind != "v2_noemb"
        if kind == "v2_nounc":
            v2.rac = replace(v2.rac, uncertainty_penalty=0.0)
        if kind == "v2_excess":
            v2.uncertainty_quantile = EXCESS_QUANTILE
        if budget.v2_meta_steps:
            cfg.merpo_v2 = v2_meta_budget(v2, budget.v2_meta_steps)
        cfg.algorithm = "merpo_v2"
    if budget.meta_iterations:
        cfg.merpo.iterations = budget.meta_iterations
    if budget.meta_critic == "fit":
        cfg.merpo.meta_critic_steps = cfg.merpo.meta_batch * cfg.merpo.inner_steps
    return cfg


def _meta_train(job: tuple) -> str:
    out, q, wm_seed, kind, data, wm_dir, budget, device, seed = job
    from learning.merpo_train import train

    run = Path(out) / "runs" / (f"{q}_s{wm_seed}" if kind == "v1" else f"{q}_s{wm_seed}_{kind}")
    cfg = meta_train_config(kind, budget, device, seed + wm_seed)
    if (run / "metrics.json").exists():
        return str(run)
    train(data, cfg, run, resume=(run / "config.json").exists(), overwrite=True, world_model=wm_dir,
          progress=False, log=lambda msg: print(f"[{q} world model {wm_seed}] {msg}", file=sys.stderr))
    return str(run)


def _pretrain(job: tuple) -> None:
    run, method = job
    from learning.merpo_train import pretrained_baseline

    pretrained_baseline(run, method, log=lambda msg: print(msg, file=sys.stderr), progress=False)


def _adapt(args: tuple) -> str:
    run, data, dst, task, method, steps = args
    import torch

    torch.set_num_threads(1)
    from learning.merpo_train import adapt

    if not (Path(dst) / "policy.pt").exists():
        _, real, kwargs = METHOD_PLAN[method]
        kwargs = {"steps": steps or None, **kwargs}  # meta_policy_v1: pi_c itself, no RAC step on the log
        adapt(run, data, dst, overwrite=True, task=task, method=real, progress=False,
              log=lambda msg: print(msg, file=sys.stderr), **kwargs)
    return str(dst)


def _adapt_all(out: Path, runs: dict, stores: dict, heldout: list[int], draws: int,
               methods_by_quality: dict[str, list[str]], budget: Budget, workers: int, progress: bool) -> list[tuple]:
    """Every method on every (held-out task, draw), in three phases that keep `workers`
    processes busy without two of them writing one file: (1) LOMPO's pooled pretraining, one
    job per run; (2) per (run, task, draw) one cheap adaptation first (meta_policy or BC when
    asked for), which also makes the shared theta_j and latents; (3) the rest in parallel."""
    pre = [(run, "lompo") for (q, s, kind), run in runs.items() if kind == METHOD_PLAN["lompo"][0]
           and "lompo" in methods_by_quality[q]]
    _pool_map(_pretrain, pre, workers, "pretrain LOMPO", progress)
    jobs: list[tuple] = []
    first: list[tuple] = []
    rest: list[tuple] = []
    sweep: list[tuple] = []
    for (q, s, kind), run in runs.items():
        order = sorted(methods_by_quality[q], key=lambda m: (m not in ZERO_SHOT, m != "bc"))  # cheapest first
        for d in range(draws):
            for task in heldout:
                # the first adaptation per (run, task, draw) also makes the shared theta_j and latents
                for i, m in enumerate(m for m in order if m in METHOD_PLAN and METHOD_PLAN[m][0] == kind):
                    dst = str(out / "adapted" / f"{q}_s{s}_d{d}_t{task}_{m}")
                    job = (run, stores[q][1][d], dst, task, m, budget.adapt_steps)
                    (first if i == 0 else sweep if m in OMEGA_SWEEP else rest).append(job)
                    jobs.append((q, s, task, d, m, dst))
    _pool_map(_adapt, first, workers, "adapt (first per unit)", progress)
    _pool_map(_adapt, rest, workers, "adapt", progress)
    twins = omega_twins(jobs)
    _pool_map(_adapt, [j for j in sweep if j[2] not in twins], workers, "adapt (omega sweep)", progress)
    return [(*j[:5], twins.get(j[5], j[5])) for j in jobs]


def omega_twins(jobs: list[tuple]) -> dict[str, str]:
    """{omega-sweep learner's directory: MerPO's} for each unit where MerPO's rules already chose
    the sweep's learner (from pi_c at the sweep's omega; its adapted run records both): the same start, seed and omega make the
    same learner, so it is adapted and evaluated once (as on the state track). A sweep learner
    adapted before (a resumed --out) keeps its own directory."""
    twins = {}
    for *_, m, dst in jobs:
        if m not in OMEGA_SWEEP or (Path(dst) / "policy.pt").exists():
            continue
        twin = Path(dst).with_name(Path(dst).name[: -len(m)] + "merpo")  # the unit's MerPO (_adapt_all's names),
        config = twin / "config.json"  # adapted in this invocation or an earlier one
        if not ((twin / "policy.pt").exists() and config.exists()):
            continue
        made = json.loads(config.read_text())  # the sweep starts from pi_c; MerPO may have started from scratch
        if made.get("omega") == OMEGA_SWEEP[m] and made.get("start") != "scratch":
            twins[dst] = str(twin)
    return twins


def _peer(job: tuple) -> list[tuple]:
    """d3rlpy's IQL on one v2 run's meta-train latents (the features every learner of the run
    sees: the world model's [z, h], actions in [-1, 1], normalised rewards), then per held-out
    (task, draw) log zero-shot (`iql_pooled`) and fine-tuned on the log's latents
    (`iql_finetuned`); each deployed behind that log's theta_j filter and exported to ONNX."""
    out, run, q, s, units, methods, budget, seed = job
    import torch

    torch.set_num_threads(1)
    from learning.export import DeployedPolicy, export_policy
    from learning.latents import LatentCache
    from learning.merpo import Normalizer, transitions
    from learning.merpo_train import data_hash, policy_spec, task_model_and_latents
    from vmerpo.benchmarks import peer

    def numpy(d: dict) -> dict:
        return {k: v.cpu().numpy() for k, v in d.items()}

    targets = {(task, d, m): Path(out) / "adapted" / f"{q}_s{s}_d{d}_t{task}_{m}" / "policy.onnx"
               for task, d, _ in units for m in methods}
    if all(p.exists() for p in targets.values()):
        return [(q, s, task, d, m, str(p)) for (task, d, m), p in targets.items()]
    norm = Normalizer.from_dict(json.loads((Path(run) / "normalizer.json").read_text()))
    pooled = numpy(transitions(LatentCache.load(Path(run) / "latents.npz"), norm))
    algo = peer.make("iql", pooled["obs"].shape[1], pooled["act"].shape[1], peer.PeerConfig(), seed)
    peer.fit(algo, pooled, budget.peer_steps, seed)
    for task, d, store in units:
        theta, cache, norm_j, small = task_model_and_latents(run, store, task)
        for m in methods:
            path = targets[(task, d, m)]
            if path.exists():
                continue
            learner = algo if m == "iql_pooled" else peer.finetuned(
                algo, numpy(transitions(cache, norm_j, task)), budget.peer_finetune_steps, seed * 1000 + 50 * d + task)
            module = DeployedPolicy(theta, peer.actor_mean(learner)).eval()
            spec = policy_spec(module, small.spec, path.parent.name, data_hash(small), task)
            export_policy(module, spec, path, overwrite=True)
    return [(q, s, task, d, m, str(p)) for (task, d, m), p in targets.items()]


def _peer_all(out: Path, runs: dict, stores: dict, heldout: list[int], draws: int,
              methods_by_quality: dict[str, list[str]], budget: Budget, seed: int, workers: int,
              progress: bool) -> list[tuple]:
    """The peer on every v2 run: evaluation jobs. A run's units are split over the workers;
    each part fits the same pooled learner (the same seed and data: identical, and cheaper
    than the fine-tunes and exports that follow)."""
    jobs = []
    for (q, s, kind), run in runs.items():
        methods = [m for m in PEER_METHODS if m in methods_by_quality[q]]
        if kind == "v2" and methods:
            units = [(task, d, stores[q][1][d]) for d in range(draws) for task in heldout]
            parts = max(1, min(workers, len(units)))
            jobs += [(str(out), run, q, s, units[k::parts], methods, budget, seed + s) for k in range(parts)]
    return [j for js in _pool_map(_peer, jobs, workers, "peer (d3rlpy IQL)", progress) for j in js]


def _eval_one(job: tuple[str, str, int, int, float, bool]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from sim.envs import make_env
    from sim.evaluate import evaluate
    from vmerpo.commands.eval import load_policy

    family, policy_dir, task, episodes, hand_init_noise, goal_pin = job
    env = make_env(family, hand_init_noise=hand_init_noise, goal_pin=goal_pin)
    try:
        res = evaluate(load_policy(policy_dir, env), env, [task], episodes, seed=EVAL_SEED)
    finally:
        env.close()
    return {"success_rate": res["success_rate"], "mean_return": res["mean_return"], "episodes": res["episodes"],
            "final_distance": res.get("mean_final_distance"), "min_distance": res.get("mean_min_distance")}


def _evaluate(out: Path, family: str, jobs: list, episodes: int, hand_init_noise: float, goal_pin: bool,
              workers: int, progress: bool) -> list[dict]:
    import multiprocessing as mp

    from tqdm import tqdm

    from learning.world_model_train import write_text_atomic

    cache_dir = out / "evals"
    cache_dir.mkdir(exist_ok=True)
    rows, todo = evaluation_plan(cache_dir, family, jobs, episodes, hand_init_noise, goal_pin)
    bar = tqdm(total=len(todo), disable=not progress, desc="evaluate", unit="policy", dynamic_ncols=True)
    with ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn")) as pool:
        for (path, (waiting, _)), res in zip(todo.items(), pool.map(_eval_one, [j for _, j in todo.values()]),
                                             strict=True):
            write_text_atomic(path, json.dumps(res))
            for row in waiting:
                row.update(res)
            bar.update(1)
    bar.close()
    return rows


def evaluation_plan(cache_dir: Path, family: str, jobs: list, episodes: int, hand_init_noise: float,
                    goal_pin: bool) -> tuple[list[dict], dict[Path, tuple[list[dict], tuple]]]:
    """Every job's row (filled from the cache where its policy was evaluated before) and what is
    left to evaluate: {cache file: (the rows waiting for it, `_eval_one`'s job)}, one evaluation
    per policy (omega twins share one)."""
    rows = []
    todo: dict[Path, tuple[list[dict], tuple]] = {}
    for q, s, task, d, m, policy_dir in jobs:
        row = {"track": "pixel", "quality": q, "wm_seed": s, "task": task, "draw": d, "method": m,
               "zero_shot": m in ZERO_SHOT, "policy": policy_dir}
        name = Path(policy_dir).parent.name if policy_dir.endswith(".onnx") else Path(policy_dir).name
        path = cache_dir / f"{name}.json"
        if path.exists():
            row.update(json.loads(path.read_text()))
        else:
            todo.setdefault(path, ([], (family, policy_dir, task, episodes, hand_init_noise, goal_pin)))[0].append(row)
        rows.append(row)
    return rows, todo


def _behaviour_success(store_path: str) -> dict[int, float]:
    """Each task's success rate in a held-out log."""
    import numpy as np

    from learning.store import EpisodeStore

    store = EpisodeStore.open(store_path, load="lazy")
    succ, tasks = np.asarray(store.episode_success, bool), np.asarray(store.episode_task)
    return {int(t): float(succ[tasks == t].mean()) for t in sorted(set(tasks.tolist()))}
