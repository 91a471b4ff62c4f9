"""Where MerPO v2's meta-policy pi_c fails on the pixel track's expert logs: task inference or pi_c?

For each meta-trained MerPO v2 run (one per log quality) and a subset of its meta-train tasks,
pi_c is evaluated in MuJoCo (the pixel track's own `_eval_one`: its hand-init noise, its starts,
the world model's filter in front of pi_c) at

    learned    the embedding meta-training learned for the task (the reward head's embedding table)
    inferred   the embedding inferred from the task's own meta-train log, as meta-training did it
               for the policies (`MerPOv2.infer`, whole log, seed cfg.seed * 1000 + task; checked
               against the checkpoint's `train_inferences`)
    mean       the meta-train tasks' mean embedding (zeros, standardised): a control for whether
               pi_c reads the embedding at all

and reported with the distance between learned and inferred embedding (standardised units), the
posterior spread, pi_c's action error against the log's own actions at each embedding, and a
linear goal probe (embedding -> true goal; leave-one-out over the meta-train tasks, and fitted on
all of them for the held-out units' inferred embeddings, whose zero-shot scores come from the
bench's own evaluations).

The filter in front of pi_c for a meta-train task is phi (the shared world model's slot 0, what
encoded the meta-train latents pi_c learned on); a held-out unit's theta_j differs from phi in its
heads only, not in the encoder or posterior that filter the images.

Nothing under the bench directories is written: policy directories go to --work.

    PYTHONPATH=. python experiments/33-pixel-expert-probe/probe.py \\
        [--run medium=/work/runs/pixel-full-32/pixel/runs/medium_s0_v2] \\
        [--run expert=/work/runs/pixel-full-32-expert/pixel/runs/expert_s0_v2] \\
        [--tasks 0,1,2,3,4,5] [--episodes 20] [--out experiments/33-pixel-expert-probe/probe.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_RUNS = ("medium=/work/runs/pixel-full-32/pixel/runs/medium_s0_v2",
                "expert=/work/runs/pixel-full-32-expert/pixel/runs/expert_s0_v2")
CONDITIONS = ("learned", "inferred", "mean")


def _goals_of():
    """experiments/20-pixel-v2-smoke/goal_error.py's `goals_of` (true goal per task id)."""
    path = HERE.parent / "20-pixel-v2-smoke" / "goal_error.py"
    spec = importlib.util.spec_from_file_location("goal_error_20", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.goals_of


def _tasks(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def load_run(run: Path):
    """The run's info, config, MerPO v2 (pi_c, embedding), world model, normalizer, latents."""
    import torch

    from learning import world_model_train as wmt
    from learning.latents import LatentCache
    from learning.merpo import Normalizer
    from learning.merpo_train import RunConfig, _read_run, load_merpo_v2

    info = _read_run(run)
    cfg = RunConfig.from_dict(info["config"])
    model, _ = wmt.load_world_model(info["world_model"], "cpu")
    m2 = load_merpo_v2(run, cfg, model.cfg.feat_dim, model.cfg.action_dim, info["meta_train_tasks"])
    sd = torch.load(run / "checkpoints" / "merpo_v2.pt", map_location="cpu", weights_only=True)
    stored = {int(k): np.asarray(v, np.float32) for k, v in sd.get("train_inferences", {}).items()}
    norm = Normalizer.from_dict(json.loads((run / "normalizer.json").read_text()))
    cache = LatentCache.load(run / "latents.npz")
    return info, cfg, model, m2, stored, norm, cache


def write_policy(dst: Path, run: Path, info: dict, cfg, m2, task: int, z: np.ndarray, task_model_file: Path,
                 store_spec: dict, cond: str) -> None:
    """An `adapted`-kind run directory holding pi_c at embedding z (what `vmerpo adapt --method
    meta_policy` writes, with z given instead of inferred), loadable by `merpo_train.load_policy`."""
    import torch

    from learning import world_model_train as wmt
    from learning.merpo_train import RUN_FORMAT, RUN_VERSION

    dst.mkdir(parents=True, exist_ok=True)
    torch.save({"actor": m2.meta_actor.state_dict(), "rac": cfg.merpo_v2.rac.to_dict(),
                "obs_dim": m2.obs_dim + m2.zdim, "act_dim": m2.act_dim, "z": np.asarray(z, np.float32).tolist()},
               dst / "policy.pt")
    link = dst / "task_model.pt"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(task_model_file, link)
    wmt.write_text_atomic(dst / "config.json", json.dumps({
        "format": RUN_FORMAT, "version": RUN_VERSION, "kind": "adapted", "parent": str(run), "task": task,
        "method": f"probe_pi_c_{cond}", "algorithm": "merpo_v2", "omega": None, "start": "meta-policy",
        "task_inference": {"z": np.asarray(z, np.float32).tolist()}, "data": info["data"],
        "data_hash": info["data_hash"], "config": cfg.to_dict(), "store_spec": store_spec}, indent=1))


def action_error(m2, data: dict, z: np.ndarray) -> float:
    """Mean squared error of pi_c's deployed action (tanh of its mean) against the log's unit
    actions on the task's transitions, at embedding z."""
    import torch

    from learning.task_embedding import condition

    with torch.no_grad():
        obs = condition(data, z)["obs"]
        a = torch.tanh(m2.meta_actor.pre_tanh_mean(obs))
        return float(((a - data["act"]) ** 2).mean())


def z_sensitivity(m2, data: dict, z: np.ndarray, other: np.ndarray) -> float:
    """RMS difference of pi_c's deployed actions at embeddings z and `other` on the task's rows:
    how much pi_c's action depends on the embedding at all."""
    import torch

    from learning.task_embedding import condition

    with torch.no_grad():
        a = torch.tanh(m2.meta_actor.pre_tanh_mean(condition(data, z)["obs"]))
        b = torch.tanh(m2.meta_actor.pre_tanh_mean(condition(data, other)["obs"]))
        return float(((a - b) ** 2).mean().sqrt())


def first_rows(data: dict, ends: np.ndarray, k: int) -> dict:
    """The first k transitions of each episode."""
    import torch

    starts = np.concatenate([[0], np.asarray(ends)[:-1]])
    idx = torch.from_numpy(np.concatenate([np.arange(s, min(s + k, t)) for s, t in zip(starts, ends, strict=True)]))
    return {key: v[idx] for key, v in data.items()}


def loo_probe(Z: np.ndarray, G: np.ndarray) -> tuple[list[float], list[float]]:
    """Leave-one-out goal error (cm) of the linear probe, and of the other tasks' mean goal."""
    from learning.task_embedding import goal_probe

    err, base = [], []
    for i in range(len(Z)):
        keep = np.arange(len(Z)) != i
        W, b = goal_probe(Z[keep], G[keep])
        err.append(float(np.linalg.norm(Z[i] @ W + b - G[i]) * 100))
        base.append(float(np.linalg.norm(G[keep].mean(0) - G[i]) * 100))
    return err, base


def probe_quality(q: str, run: Path, tasks: list[int], conditions: list[str], episodes: int, noise: float,
                  work: Path, goals_of, log) -> dict:
    import torch

    from learning import world_model_train as wmt
    from learning.merpo import transitions
    from learning.merpo_train import transition_episode_ends
    from learning.meta_model import task_model
    from learning.store import EpisodeStore
    from learning.task_embedding import goal_probe
    from vmerpo.benchmarks.learning_pixel import _eval_one

    torch.set_num_threads(1)
    info, cfg, model, m2, stored, norm, cache = load_run(run)
    bench = run.parents[2]
    settings = json.loads((bench / "settings.json").read_text())
    family, goal_pin = settings["family"], bool(settings["pixel_budget"].get("goal_pin", False))
    meta_tasks = list(info["meta_train_tasks"])
    assert m2.embedding is not None, f"{run}: no task embedding"
    learned = m2.embedding.train_embeddings()  # standardised, as pi_c sees embeddings
    store_spec = EpisodeStore.open(info["data"], load="lazy").spec.to_attrs()

    # every meta-train task's inference from its own whole log (as meta-training did it)
    t0 = time.perf_counter()
    inferred, datas = {}, {}
    for n in meta_tasks:
        datas[n] = transitions(cache, norm, n)
        inferred[n] = m2.infer(datas[n], transition_episode_ends(cache, n), seed=cfg.merpo_v2.seed * 1000 + n)
    mismatch = max(float(np.abs(inferred[n].z - stored[n]).max()) for n in meta_tasks) if stored else None
    log(f"[{q}] inferred the {len(meta_tasks)} meta-train tasks' embeddings in {time.perf_counter() - t0:.0f} s "
        f"(max |z - checkpoint's train_inferences| {mismatch})")

    pooled_act = torch.cat([datas[n]["act"] for n in meta_tasks]).mean(0)
    act_scale = {n: {"pooled_mean_action": float(((datas[n]["act"] - pooled_act) ** 2).mean()),
                     "task_mean_action": float(((datas[n]["act"] - datas[n]["act"].mean(0)) ** 2).mean())}
                 for n in meta_tasks}
    firsts = {n: first_rows(datas[n], transition_episode_ends(cache, n), 5) for n in meta_tasks}
    goals = goals_of(family, meta_tasks)
    G = np.stack([goals[n] for n in meta_tasks])
    ZL = np.stack([learned[n] for n in meta_tasks])
    ZI = np.stack([inferred[n].z for n in meta_tasks])
    loo_l, base = loo_probe(ZL, G)
    loo_i, _ = loo_probe(ZI, G)
    probe = {"loo_goal_error_cm_learned": float(np.mean(loo_l)), "loo_goal_error_cm_inferred": float(np.mean(loo_i)),
             "loo_mean_goal_error_cm": float(np.mean(base)),
             "per_task": {str(n): {"learned": loo_l[i], "inferred": loo_i[i], "mean_goal": base[i]}
                          for i, n in enumerate(meta_tasks)}}
    log(f"[{q}] goal probe (leave-one-out over {len(meta_tasks)} tasks): learned {probe['loo_goal_error_cm_learned']:.1f} cm, "
        f"inferred {probe['loo_goal_error_cm_inferred']:.1f} cm, the others' mean goal {probe['loo_mean_goal_error_cm']:.1f} cm")

    # the held-out units' own inferences (the bench's adapted meta_policy runs) through probes fitted on all tasks
    pixel = run.parents[1]
    kind = run.name[len(q) + 1:]  # e.g. s0_v2
    wm_seed = kind.split("_")[0]
    held_dirs = sorted(pixel.glob(f"adapted/{q}_{wm_seed}_d*_t*_meta_policy"))
    held = []
    if held_dirs:
        c0 = [json.loads((d / "config.json").read_text()) for d in held_dirs]
        hgoals = goals_of(family, sorted({c["task"] for c in c0}))
        WL, bL = goal_probe(ZL, G)
        WI, bI = goal_probe(ZI, G)
        for d, c in zip(held_dirs, c0, strict=True):
            ti = c["task_inference"]
            z = np.asarray(ti["z"], np.float32)
            g = hgoals[c["task"]]
            ev = pixel / "evals" / f"{d.name}.json"
            res = json.loads(ev.read_text()) if ev.exists() else {}
            held.append({"unit": d.name, "task": c["task"], "spread": float(np.linalg.norm(ti["std"])),
                         "goal_error_cm_learned_probe": float(np.linalg.norm(z @ WL + bL - g) * 100),
                         "goal_error_cm_inferred_probe": float(np.linalg.norm(z @ WI + bI - g) * 100),
                         "mean_goal_error_cm": float(np.linalg.norm(G.mean(0) - g) * 100),
                         "nearest_train_inferred": float(np.min(np.linalg.norm(ZI - z, axis=1))),
                         "success": res.get("success_rate"), "final_distance": res.get("final_distance"),
                         "min_distance": res.get("min_distance")})

    # pi_c in MuJoCo at each condition's embedding
    qwork = work / q
    qwork.mkdir(parents=True, exist_ok=True)
    tm_file = qwork / "phi_task_model.pt"
    if not tm_file.exists():
        phi = task_model(model, 0)
        wmt.save_checkpoint(tm_file, phi, None, 0, dataclasses.replace(cfg.world_model, model=phi.cfg), {0: 0})
    rows = []
    zero = m2.embedding.mean_embedding()
    for n in tasks:
        zs = {"learned": learned[n], "inferred": inferred[n].z, "mean": zero}
        base_row = {"quality": q, "task": n, "goal": goals[n].tolist(),
                    "learned_minus_inferred": float(np.linalg.norm(learned[n] - inferred[n].z)),
                    "spread": float(np.linalg.norm(inferred[n].std)),
                    "nearest_other_learned": float(min(np.linalg.norm(learned[n] - learned[k])
                                                       for k in meta_tasks if k != n)),
                    "nearest_other_inferred": float(min(np.linalg.norm(inferred[n].z - inferred[k].z)
                                                        for k in meta_tasks if k != n)),
                    "reward_mse": inferred[n].reward_mse,
                    "action_mse_pooled_mean_action": act_scale[n]["pooled_mean_action"]}
        for cond in conditions:
            dst = qwork / f"t{n}_{cond}"
            cached = qwork / f"t{n}_{cond}.eval{episodes}.json"
            write_policy(dst, run, info, cfg, m2, n, zs[cond], tm_file, store_spec, cond)
            if cached.exists():
                res = json.loads(cached.read_text())
            else:
                t = time.perf_counter()
                res = _eval_one((family, str(dst), n, episodes, noise, goal_pin))
                res["seconds"] = time.perf_counter() - t
                cached.write_text(json.dumps(res))
            row = {**base_row, "condition": cond, "z": np.asarray(zs[cond]).tolist(),
                   "action_mse": action_error(m2, datas[n], zs[cond]),
                   "success": res["success_rate"], "final_distance": res["final_distance"],
                   "min_distance": res["min_distance"], "mean_return": res["mean_return"]}
            rows.append(row)
            log(f"[{q}] task {n} {cond:8s}: success {row['success']:.2f}, final {100 * row['final_distance']:.1f} cm, "
                f"closest {100 * row['min_distance']:.1f} cm, action mse {row['action_mse']:.3f} "
                f"({res.get('seconds', 0):.0f} s)")
    return {"run": str(run), "family": family, "meta_train_tasks": meta_tasks, "episodes": episodes,
            "hand_init_noise": noise, "checkpoint_inference_max_abs_diff": mismatch,
            "all_tasks": {str(n): {"learned": learned[n].tolist(), "inferred": inferred[n].z.tolist(),
                                   "inferred_std": inferred[n].std.tolist(),
                                   "learned_minus_inferred": float(np.linalg.norm(learned[n] - inferred[n].z)),
                                   "spread": float(np.linalg.norm(inferred[n].std)),
                                   "evidence": inferred[n].evidence, "reward_mse": inferred[n].reward_mse,
                                   "action_mse_learned": action_error(m2, datas[n], learned[n]),
                                   "action_mse_inferred": action_error(m2, datas[n], inferred[n].z),
                                   "action_mse_mean": action_error(m2, datas[n], zero),
                                   "action_mse_of_constant": act_scale[n],
                                   # the first 5 steps of each episode, before the path shows the goal
                                   "first5_action_mse_learned": action_error(m2, firsts[n], learned[n]),
                                   "first5_action_mse_mean": action_error(m2, firsts[n], zero),
                                   "first5_action_mse_task_mean_action": float(
                                       ((firsts[n]["act"] - firsts[n]["act"].mean(0)) ** 2).mean()),
                                   "z_sensitivity_learned_vs_mean": z_sensitivity(m2, datas[n], learned[n], zero),
                                   "z_sensitivity_learned_vs_inferred": z_sensitivity(m2, datas[n], learned[n],
                                                                                      inferred[n].z)}
                          for n in meta_tasks},
            "goal_probe": probe, "heldout": held, "rows": rows}


def table(result: dict) -> str:
    lines = ["| quality | task | embedding | success | final (cm) | closest (cm) | action mse | "
             "|learned - inferred| | spread |",
             "|---|---|---|---|---|---|---|---|---|"]
    for q, r in result["qualities"].items():
        for row in r["rows"]:
            lines.append(f"| {q} | {row['task']} | {row['condition']} | {row['success']:.2f} | "
                         f"{100 * row['final_distance']:.1f} | {100 * row['min_distance']:.1f} | {row['action_mse']:.3f} | "
                         f"{row['learned_minus_inferred']:.2f} | {row['spread']:.2f} |")
    lines += ["", "| quality | embedding | success | final (cm) | closest (cm) | action mse (probed tasks) | "
              "mse of the pooled mean action |", "|---|---|---|---|---|---|---|"]
    for q, r in result["qualities"].items():
        for cond in dict.fromkeys(row["condition"] for row in r["rows"]):
            sel = [row for row in r["rows"] if row["condition"] == cond]
            lines.append(f"| {q} | {cond} | {np.mean([s['success'] for s in sel]):.2f} | "
                         f"{100 * np.mean([s['final_distance'] for s in sel]):.1f} | "
                         f"{100 * np.mean([s['min_distance'] for s in sel]):.1f} | "
                         f"{np.mean([s['action_mse'] for s in sel]):.3f} | "
                         f"{np.mean([s['action_mse_pooled_mean_action'] for s in sel]):.3f} |")
    lines += ["", "| quality | all 20 tasks: mean |learned - inferred| | spread | nearest other task (inferred) | "
              "LOO goal probe learned / inferred / mean goal (cm) | held-out: inferred goal error (cm, inferred probe) | "
              "held-out spread | held-out zero-shot success | pi_c action RMS change, learned vs mean embedding | "
              "first 5 steps: action mse learned / mean embedding / task's mean action |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for q, r in result["qualities"].items():
        at = r["all_tasks"].values()
        p = r["goal_probe"]
        h = r["heldout"]
        near = np.mean([min(np.linalg.norm(np.subtract(a["inferred"], b["inferred"]))
                            for b in at if b is not a) for a in at])
        lines.append(f"| {q} | {np.mean([a['learned_minus_inferred'] for a in at]):.2f} | "
                     f"{np.mean([a['spread'] for a in at]):.2f} | {near:.2f} | "
                     f"{p['loo_goal_error_cm_learned']:.1f} / {p['loo_goal_error_cm_inferred']:.1f} / "
                     f"{p['loo_mean_goal_error_cm']:.1f} | "
                     + (f"{np.mean([u['goal_error_cm_inferred_probe'] for u in h]):.1f} | "
                        f"{np.mean([u['spread'] for u in h]):.2f} | "
                        f"{np.mean([u['success'] for u in h if u['success'] is not None]):.2f} |" if h else "– | – | – |")
                     + f" {np.mean([a['z_sensitivity_learned_vs_mean'] for a in at]):.3f} | "
                     f"{np.mean([a['first5_action_mse_learned'] for a in at]):.3f} / "
                     f"{np.mean([a['first5_action_mse_mean'] for a in at]):.3f} / "
                     f"{np.mean([a['first5_action_mse_task_mean_action'] for a in at]):.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", metavar="QUALITY=RUN_DIR",
                   help="a meta-trained MerPO v2 run of the pixel bench (repeatable; default: "
                        + ", ".join(DEFAULT_RUNS) + ")")
    p.add_argument("--tasks", default="0-5", help="meta-train tasks to evaluate pi_c on (e.g. 0-5 or 0,3,7; default 0-5)")
    p.add_argument("--conditions", default=",".join(CONDITIONS),
                   help=f"embeddings to evaluate pi_c at, of {', '.join(CONDITIONS)} (default all)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per (task, embedding) (default 20)")
    p.add_argument("--hand-init-noise", type=float, default=None,
                   help="the evaluation's hand start noise (default: the bench's settings.json, 0.05)")
    p.add_argument("--work", default="/tmp/probe33", help="scratch folder for the policy directories and "
                                                         "cached evaluations (default /tmp/probe33)")
    p.add_argument("--out", default=str(HERE / "probe.json"), help="result JSON (default: next to this script)")
    a = p.parse_args()
    conditions = [c for c in a.conditions.split(",") if c]
    bad = sorted(set(conditions) - set(CONDITIONS))
    if bad:
        p.error(f"--conditions: unknown {bad}")
    runs = dict(r.split("=", 1) for r in (a.run or DEFAULT_RUNS))
    tasks = _tasks(a.tasks)
    goals_of = _goals_of()
    work = Path(a.work)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    result = {"tasks": tasks, "conditions": conditions, "qualities": {}}
    for q, run in runs.items():
        run = Path(run)
        settings = json.loads((run.parents[2] / "settings.json").read_text())
        noise = settings["hand_init_noise"] if a.hand_init_noise is None else a.hand_init_noise
        result["qualities"][q] = probe_quality(q, run, tasks, conditions, a.episodes, noise, work, goals_of, log)
        Path(a.out).write_text(json.dumps(result, indent=1))
    result["seconds"] = time.perf_counter() - t0
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
