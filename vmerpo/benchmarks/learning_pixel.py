"""`vmerpo bench learning`: MerPO against its baselines on held-out tasks.

One world model per family (trained once on the mixed-quality meta-train logs) is shared by
every method, quality and seed. Per quality (expert / medium / mixed) and seed:

    collect   meta-train logs of the first N train tasks, and a small log (5 episodes) of each
              of the first K held-out tasks, at that quality          (reused when present)
    train     `vmerpo train --world-model WM`: latents + MerPO meta-training (seed = seed)
    adapt     every method to every held-out task from its small log  (`vmerpo adapt --method`)
    evaluate  each adapted policy on its task with the sim harness (two processes)

and writes results.json (per method and quality: success_mean, success_stderr, n_episodes,
plus every evaluation), results.md (the table, generated here, never edited by hand) and
results.png (a bar plot). Each stage's outputs are kept under --out and reused on a rerun, so
a killed benchmark continues where it stopped. success_stderr is the standard error of the
mean over the (held-out task, seed) success rates.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from vmerpo.commands.options import add_goal_pin, add_hand_init_noise, experimental_group

QUALITIES = ("expert", "medium", "mixed")
METHODS = ("merpo", "merpo_adp", "rac", "lompo", "bc")


@dataclass(frozen=True)
class Budget:
    train_tasks: int  # meta-train tasks: the family's first N train ids
    episodes_per_task: int  # meta-train episodes per task and quality
    heldout_tasks: int  # the family's first K held-out ids
    heldout_episodes: int  # the small log per held-out task (5 episodes)
    seeds: int
    eval_episodes: int  # per held-out task and seed
    config: str  # `vmerpo train` preset
    wm_steps: int  # world-model steps (0: the preset's)
    adapt_steps: int = 0  # RAC/BC steps on each small log (0: the preset's)
    meta_iterations: int = 0  # MerPO iterations (0: the preset's); baselines pretrain as many updates
    methods: tuple[str, ...] = METHODS  # compared by default (--methods picks others)
    wm_preset: str = ""  # world-model preset ("": the `config` preset's; --world-model picks another)
    meta_critic: str = "polyak"  # Q_meta: polyak mean of the task critics (MerPO) or "fit" (--meta-critic)
    hand_init_noise: float = 0.0  # m; random hand start per episode in logs and evaluations (--hand-init-noise)
    goal_pin: bool = False  # draw the pin under the goal marker in logs and evaluations (--goal-pin)
    pooled_reward_scale: float = 0.0  # shared world model's pooled reward head weight (--pooled-reward)


BUDGETS = {
    # 26.9 min on the idle 2-core CPU machine (experiments/02-learning-benchmark-reach; 1800 adaptation steps took 28.6-31.0 min)
    "smoke": Budget(train_tasks=10, episodes_per_task=6, heldout_tasks=3, heldout_episodes=5, seeds=1,
                    eval_episodes=10, config="cpu", wm_steps=1000, meta_iterations=5, adapt_steps=1500,
                    methods=("merpo", "rac", "lompo", "bc")),  # MerPO-Adp's 3 more adaptations would pass 30 min
    # 123.4 min on the 2-core CPU machine, ~117 idle (experiments/02-learning-benchmark-reach), target 150
    "full": Budget(train_tasks=20, episodes_per_task=8, heldout_tasks=3, heldout_episodes=5, seeds=3,
                   eval_episodes=20, config="cpu", wm_steps=0),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vmerpo bench learning",
        description="MerPO vs BC, LOMPO and single-task RAC on held-out tasks: collect (or reuse) logs, "
                    "train one world model, meta-train, adapt every method to each held-out task "
                    "from a 5-episode log, evaluate in MuJoCo, write results.json/.md/.png.")
    p.add_argument("--family", default="reach", help="task family, e.g. reach or reach-v3 (default reach)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="smoke",
                   help="smoke: 1 seed, 10 episodes (~30 min on 2 CPU cores); full: 3 seeds, 20 episodes")
    p.add_argument("--out", default="results/learning", help="output directory (reused on a rerun)")
    p.add_argument("--qualities", default=",".join(QUALITIES), help="comma-separated subset of expert,medium,mixed")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} (default: the budget's; "
                                     "smoke leaves out merpo_adp, MerPO-Adp)")
    p.add_argument("--device", default="auto",
                   help="auto|cpu|cuda; with cuda the full budget uses the paper's sizes")
    p.add_argument("--heldout-tasks", type=int, metavar="K",
                   help="adapt to the family's first K held-out tasks (default: the budget's, 3); on a rerun "
                        "with a larger K only the new tasks' logs, adaptations and evaluations are made")
    add_hand_init_noise(p, default=None, note="an --out collected otherwise is refused")
    exp = experimental_group(p)
    add_goal_pin(exp, note="an --out collected otherwise is refused")
    exp.add_argument("--world-model", metavar="PRESET", choices=("cpu", "bench", "paper"),
                     help="world-model preset of the shared model (default: the budget's, cpu; bench: the "
                        "ensemble with random prior functions that the world-model benchmark uses)")
    exp.add_argument("--meta-critic", choices=("polyak", "fit"),
                     help="Q_meta of MerPO: polyak (default, MerPO: the polyak mean of the task critics) or fit "
                        "(trained as pi_c's own conservative critic, as many critic steps per meta-step as "
                        "the task learners make together)")
    exp.add_argument("--pooled-reward", type=float, metavar="SCALE",
                     help="train the shared world model with a pooled reward head of this loss weight (one "
                        "head over every task's windows: the latent has to carry the goal; "
                        "WorldModelConfig.pooled_reward_scale, default 0 = off)")
    p.add_argument("--workers", type=int, default=2, help="evaluation processes (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    family = args.family if args.family.endswith("-v3") else f"{args.family}-v3"
    qualities = _subset(args.qualities, QUALITIES, "--qualities")
    budget = BUDGETS[args.budget]
    methods = _subset(args.methods or ",".join(budget.methods), METHODS, "--methods")
    if args.device == "cuda" and args.budget == "full":
        budget = replace(budget, config="paper")
    if args.world_model:
        budget = replace(budget, wm_preset=args.world_model)
    if args.meta_critic:
        budget = replace(budget, meta_critic=args.meta_critic)
    if args.pooled_reward is not None:
        if not args.pooled_reward >= 0:
            raise ValueError(f"--pooled-reward {args.pooled_reward}: must be 0 or more")
        budget = replace(budget, pooled_reward_scale=float(args.pooled_reward))
    if args.heldout_tasks is not None:
        if args.heldout_tasks < 1:
            raise ValueError(f"--heldout-tasks {args.heldout_tasks}: must be at least 1")
        budget = replace(budget, heldout_tasks=args.heldout_tasks)
    if args.hand_init_noise is not None:
        from sim.envs import check_hand_init_noise

        budget = replace(budget, hand_init_noise=check_hand_init_noise(args.hand_init_noise))
    if args.goal_pin:
        from sim.envs import check_goal_pin

        budget = replace(budget, goal_pin=check_goal_pin(family, True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    progress = not args.no_progress

    from sim.envs import task_set

    test_ids = task_set(family).split_ids("test")
    if budget.heldout_tasks > len(test_ids):
        raise ValueError(f"--heldout-tasks {budget.heldout_tasks}: {family} has {len(test_ids)} held-out tasks")
    heldout = test_ids[: budget.heldout_tasks]
    stores = _collect(out / "data", family, qualities, budget, heldout, progress)
    timings["collect_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    wm_dir = _world_model(out, stores["mixed" if "mixed" in stores else qualities[0]][0], budget, args.device,
                          args.workers, progress)
    timings["world_model_s"] = time.perf_counter() - t

    t = time.perf_counter()
    keys = [(q, seed) for q in qualities for seed in range(budget.seeds)]
    todo = [(str(out), q, seed, stores[q][0], wm_dir, budget, args.device) for q, seed in keys]
    runs = dict(zip(keys, _pool_map(_meta_train, todo, args.workers, "meta-train", progress), strict=True))
    timings["meta_train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    jobs = _adapt_all(out, runs, stores, heldout, methods, budget, args.workers, progress)
    timings["adapt_s"] = time.perf_counter() - t

    t = time.perf_counter()
    evals = _evaluate(out, family, jobs, budget, args.workers, progress)
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    behaviour = {q: _behaviour_success(stores[q][1]) for q in qualities}
    results = summarize(evals, methods, qualities)
    command = "vmerpo bench learning " + " ".join(sys.argv[1:] if argv is None else argv)
    invocations = _previous_invocations(out / "results.json") + [
        {"command": command, "timings": {k: round(v, 1) for k, v in timings.items()}}]
    total_min = sum(i["timings"]["total_s"] for i in invocations) / 60
    doc = {"family": family, "budget": args.budget, "budget_config": asdict(budget), "heldout_tasks": heldout,
           "device": args.device, "results": results, "behaviour_heldout_logs": behaviour,
           "evaluations": evals, "timings": invocations[-1]["timings"], "command": command,
           # a rerun reuses every finished stage: its own timings cover only what it added
           "invocations": invocations, "total_minutes_all_invocations": round(total_min, 1)}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    table = markdown_table(results, behaviour, methods, qualities)
    (out / "results.md").write_text(
        f"Held-out success on {family} (tasks {heldout}), budget `{args.budget}` "
        f"({budget.seeds} seed(s) x {budget.eval_episodes} episodes per task), "
        + (f"{total_min:.0f} min" if len(invocations) == 1 else
           f"{total_min:.0f} min in {len(invocations)} invocations ("
           + " + ".join(f"{i['timings']['total_s'] / 60:.0f}" for i in invocations) + ")")
        + f".\n\n{table}\n")
    bar_plot(results, behaviour, methods, qualities, out / "results.png", f"{family} held-out ({args.budget})")
    print(table)
    print(f"\nresults: {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'} "
          f"({timings['total_s'] / 60:.1f} min)")
    return 0


def _previous_invocations(path: Path) -> list[dict]:
    """What earlier invocations on this --out recorded (a rerun adds to it, never loses it)."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    return old.get("invocations") or [{"command": old.get("command", "?"), "timings": old["timings"]}]


def _subset(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise ValueError(f"{flag}: unknown {bad or 'empty'}; choose from {','.join(allowed)}")
    return items


# -- stages ------------------------------------------------------------------------------------
def _collect(data: Path, family: str, qualities: list[str], budget: Budget, heldout: list[int],
             progress: bool) -> dict[str, tuple[str, str]]:
    from sim.collect import CollectConfig, collect
    from sim.envs import task_set

    train_ids = task_set(family).select(str(budget.train_tasks))
    need = set(qualities) | {"mixed"}  # the world model trains on the mixed logs
    stores = {}
    for q in sorted(need):
        i = QUALITIES.index(q)  # seeds independent of the --qualities subset
        meta = data / f"{q}.zarr"
        small = data / f"{q}_heldout.zarr"
        for path, tasks, eps, seed in ((meta, train_ids, budget.episodes_per_task, 100 + i),
                                       (small, list(heldout), budget.heldout_episodes, 200 + i)):
            cfg = CollectConfig(family=family, out=str(path), tasks=tasks, episodes_per_task=eps, quality=q,
                                seed=seed, hand_init_noise=budget.hand_init_noise, goal_pin=budget.goal_pin,
                                workers=2,
                                resume=path.exists())
            collect(cfg, progress=progress)
        stores[q] = (str(meta), str(small))
    return stores


def _world_model(out: Path, data: str, budget: Budget, device: str, workers: int, progress: bool) -> str:
    from learning import world_model_train as wmt
    from learning.merpo_train import preset

    wm_dir = out / "world_model"
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


def _meta_train(job: tuple) -> str:
    out, q, seed, data, wm_dir, budget, device = job
    from learning.merpo_train import preset, train

    run = Path(out) / "runs" / f"{q}_s{seed}"
    cfg = preset(budget.config)
    cfg.device = device
    cfg.merpo.seed = seed
    if budget.meta_iterations:
        cfg.merpo.iterations = budget.meta_iterations
    if budget.meta_critic == "fit":
        cfg.merpo.meta_critic_steps = cfg.merpo.meta_batch * cfg.merpo.inner_steps
    if (run / "config.json").exists():
        have = json.loads((run / "config.json").read_text())["config"]["merpo"].get("meta_critic_steps", 0)
        if have != cfg.merpo.meta_critic_steps:
            raise ValueError(f"{run} was meta-trained with meta_critic_steps={have}, not "
                             f"{cfg.merpo.meta_critic_steps}: use another --out for --meta-critic {budget.meta_critic}")
    if (run / "metrics.json").exists():
        return str(run)
    train(data, cfg, run, resume=(run / "config.json").exists(), overwrite=True, world_model=wm_dir,
          progress=False, log=lambda msg: print(f"[{q} seed {seed}] {msg}", file=sys.stderr))
    return str(run)


def _pretrain(job: tuple) -> None:
    run, method = job
    from learning.merpo_train import pretrained_baseline

    pretrained_baseline(run, method, log=lambda msg: print(msg, file=sys.stderr), progress=False)


def _adapt(args: tuple) -> str:
    run, data, dst, task, method, steps, progress = args
    import torch

    torch.set_num_threads(1)
    from learning.merpo_train import adapt

    if not (Path(dst) / "policy.pt").exists():
        adapt(run, data, dst, overwrite=True, task=task, method=method, progress=progress,
              steps=steps or None, log=lambda msg: print(msg, file=sys.stderr))
    return str(dst)


def _adapt_all(out: Path, runs: dict, stores: dict, heldout: list[int], methods: list[str], budget: Budget,
               workers: int, progress: bool) -> list[tuple]:
    """Every method on every held-out task, in three phases that keep `workers` processes
    busy without two of them writing one file: (1) the baselines' pooled pretraining (BC's
    too), one job per (run, method), in parallel; (2) per (run, task) one cheap adaptation first (BC when
    asked for), which also makes the shared theta_j and latents, in parallel over (run, task);
    (3) the rest in parallel."""
    from learning.baselines import META_METHODS

    pre = [(run, m) for run in runs.values() for m in methods if m not in META_METHODS]
    _pool_map(_pretrain, pre, workers, "pretrain baselines", progress)
    order = sorted(methods, key=lambda m: m != "bc")  # bc first: cheapest
    first: list[tuple]
    rest: list[tuple]
    jobs, first, rest = [], [], []
    for (q, seed), run in runs.items():
        for task in heldout:
            for i, m in enumerate(order):
                dst = str(out / "adapted" / f"{q}_s{seed}_t{task}_{m}")
                (first if i == 0 else rest).append((run, stores[q][1], dst, task, m, budget.adapt_steps, False))
                jobs.append((q, seed, task, m, dst))
    _pool_map(_adapt, first, workers, "adapt (first per task)", progress)  # one job per (run, task)
    _pool_map(_adapt, rest, workers, "adapt", progress)
    return jobs


def _eval_one(job: tuple[str, str, int, int, int, float, bool]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from sim.envs import make_env
    from sim.evaluate import evaluate
    from vmerpo.commands.eval import load_policy

    family, policy_dir, task, episodes, seed, hand_init_noise, goal_pin = job
    env = make_env(family, hand_init_noise=hand_init_noise, goal_pin=goal_pin)
    try:
        res = evaluate(load_policy(policy_dir, env), env, [task], episodes, seed=seed)
    finally:
        env.close()
    return {"success_rate": res["success_rate"], "mean_return": res["mean_return"], "episodes": res["episodes"]}


def _evaluate(out: Path, family: str, jobs: list, budget: Budget, workers: int, progress: bool) -> list[dict]:
    import multiprocessing as mp

    from tqdm import tqdm

    cache_dir = out / "evals"
    cache_dir.mkdir(exist_ok=True)
    rows, todo = [], []
    for q, seed, task, m, policy_dir in jobs:
        row = {"quality": q, "seed": seed, "task": task, "method": m, "policy": policy_dir}
        path = cache_dir / f"{Path(policy_dir).name}.json"
        if path.exists():
            row.update(json.loads(path.read_text()))
        else:
            todo.append((row, path, (family, policy_dir, task, budget.eval_episodes, 1000 + seed,
                                     budget.hand_init_noise, budget.goal_pin)))
        rows.append(row)
    bar = tqdm(total=len(todo), disable=not progress, desc="evaluate", unit="policy", dynamic_ncols=True)
    with ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn")) as pool:
        for (row, path, _), res in zip(todo, pool.map(_eval_one, [j for _, _, j in todo]), strict=True):
            path.write_text(json.dumps(res))
            row.update(res)
            bar.update(1)
    bar.close()
    return rows


def _behaviour_success(store_path: str) -> float:
    from learning.inspect_store import summarize as summarize_store
    from learning.store import EpisodeStore

    return float(summarize_store(EpisodeStore.open(store_path, load="lazy"))["success_rate"])


# -- results -----------------------------------------------------------------------------------
def summarize(evals: list[dict], methods: list[str], qualities: list[str]) -> dict[str, dict[str, dict]]:
    """{method: {quality: {success_mean, success_stderr, n_episodes, n_units}}}; the standard
    error is over (task, seed) units' success rates (0 with one unit)."""
    out: dict[str, dict[str, dict]] = {}
    for m in methods:
        for q in qualities:
            units = [e for e in evals if e["method"] == m and e["quality"] == q and "success_rate" in e]
            rates = [e["success_rate"] for e in units]
            n = len(rates)
            mean = sum(rates) / n if n else float("nan")
            var = sum((r - mean) ** 2 for r in rates) / (n - 1) if n > 1 else 0.0
            out.setdefault(m, {})[q] = {"success_mean": mean, "success_stderr": math.sqrt(var / n) if n else 0.0,
                                        "n_episodes": sum(e["episodes"] for e in units), "n_units": n}
    return out


def markdown_table(results: dict, behaviour: dict[str, float], methods: list[str], qualities: list[str]) -> str:
    lines = ["| method | " + " | ".join(qualities) + " |", "|---|" + "---|" * len(qualities)]
    for m in methods:
        cells = [f"{results[m][q]['success_mean']:.2f} ± {results[m][q]['success_stderr']:.2f}"
                 f" (n={results[m][q]['n_episodes']})" for q in qualities]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("| behaviour (held-out logs) | " + " | ".join(f"{behaviour[q]:.2f}" for q in qualities) + " |")
    return "\n".join(lines)


def bar_plot(results: dict, behaviour: dict[str, float], methods: list[str], qualities: list[str],
             path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(qualities), 3.2))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(qualities))]
        ax.bar(xs, [results[m][q]["success_mean"] for q in qualities], width,
               yerr=[results[m][q]["success_stderr"] for q in qualities], capsize=2, label=m)
    for j, q in enumerate(qualities):
        ax.hlines(behaviour[q], j - 0.4, j + 0.4, colors="k", linestyles="dashed",
                  label="behaviour data" if j == 0 else None)  # type: ignore[arg-type]
    ax.set_xticks(range(len(qualities)), qualities)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out success")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
