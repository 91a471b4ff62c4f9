"""World-model benchmark: does the latent uncertainty mean something, does the
meta-model help, how fast does training run. JSON out (one entry per task family) and a
plot per family of uncertainty vs error and of the OOD-action check (`OUT_stem_FAMILY_uncertainty.png`).

Per family: train (or load, `--run`) the meta-model on the training store (training tasks),
then
- on held-out episodes of the training tasks: imagine H steps from every posterior state
  under the logged actions; Spearman(u of each imagined step, its error ||z_imagined -
  z_post||, z_post = posterior mean of the real frame) -> `uncertainty_error_spearman`;
  H-step rollouts under the dataset actions vs uniform random actions, AUROC of the mean u
  of each rollout -> `ood_action_auroc` (`ood_action_auroc_first_step`: first step only).
- on held-out tasks (test store): theta_j adapted from phi with 5 episodes vs phi itself vs
  heads trained from scratch with the same steps (on the same shared encoder), and vs a whole
  world model trained from scratch on the 5 episodes with the same steps; prediction loss on
  the task's other episodes: H-step open-loop reward NLL (the ratio keys) and image NLL
  (`*_image_*` keys).
- training steps/s, frames/s and the share of each step spent waiting for data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learning.latents import encode_store, filter_episodes
from learning.meta_model import ADAPT_HEADS, adapt, task_model
from learning.store import EpisodeStore
from learning.world_model_train import load_config, load_world_model, train
from perception.world_model import WorldModel, latent_uncertainty
from vmerpo.benchmarks.prior_refit import refit_prior_heads


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(score of a positive > score of a negative) (Mann-Whitney)."""
    scores = np.concatenate([neg, pos])
    ranks = np.argsort(np.argsort(scores)) + 1
    r_pos = ranks[len(neg):].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def paired_auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(pos_i > neg_i) over pairs i (ties count half)."""
    return float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg))


def _episodes(store: EpisodeStore, eps: list[int]) -> list[dict[str, np.ndarray]]:
    return [store.episode(e) for e in eps]


def _posteriors(model: WorldModel, episodes: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The mode filter over whole episodes (with the state for a model that takes it)."""
    states = [e["state"] for e in episodes] if model.cfg.state_dim else None
    return filter_episodes(model, [e["image"] for e in episodes], [e["action"] for e in episodes], states)


def _open_loop(model: WorldModel, ep: dict[str, np.ndarray], p: dict[str, np.ndarray], starts: np.ndarray,
               slot: int, horizon: int, gen: torch.Generator) -> dict[str, np.ndarray]:
    """H-step open loop from the posterior states at `starts` under the logged actions, one
    ensemble member sampled per step. Per imagined step: its uncertainty `u` (log_prob;
    `max_var`, `mean_dis`), its error ||z_imagined - z_post|| (`err`; `err_mean`: of the
    member's mean) against the posterior mean of the real frame, and its `step` (1..H)."""
    K = model.cfg.ensemble
    h, z = torch.from_numpy(p["h"][starts]), torch.from_numpy(p["z"][starts])
    sl = torch.full((len(starts),), slot, dtype=torch.long)
    acts = torch.from_numpy(np.stack([ep["action"][s:s + horizon] for s in starts]))
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("u", "max_var", "mean_dis", "err", "err_mean", "step")}
    pick = torch.arange(len(starts))
    for t in range(horizon):
        h = model.transition(h, z, acts[:, t])
        mu, std = model.prior(h, sl, acts[:, t])
        k = torch.randint(K, (len(starts),), generator=gen)
        z = mu[pick, k] + std[pick, k] * torch.randn(mu[:, 0].shape, generator=gen)
        target = torch.from_numpy(p["z"][starts + t + 1])
        out["u"].append(latent_uncertainty(z, mu, std, "log_prob").numpy())
        for kind in ("max_var", "mean_dis"):
            out[kind].append(latent_uncertainty(z, mu, std, kind).numpy())
        out["err"].append((z - target).norm(dim=-1).numpy())
        out["err_mean"].append((mu[pick, k] - target).norm(dim=-1).numpy())
        out["step"].append(np.full(len(starts), t + 1))
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.no_grad()
def uncertainty_vs_error(model: WorldModel, slots: list[int], episodes: list[dict[str, np.ndarray]],
                         horizon: int, seed: int, stride: int = 2) -> dict[str, np.ndarray]:
    """The open-loop part of `uncertainty_checks` alone, for plots: per imagined step of an
    H-step rollout from every `stride`-th posterior state, u, err, err_mean and step (see
    `_open_loop`); spearman(u, err) is `uncertainty_error_spearman`'s statistic."""
    gen = torch.Generator().manual_seed(seed)
    parts = [_open_loop(model, ep, p, np.arange(0, len(ep["action"]) - horizon, stride), slot, horizon, gen)
             for ep, p, slot in zip(episodes, _posteriors(model, episodes), slots, strict=True)]
    return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}


@torch.no_grad()
def uncertainty_checks(model: WorldModel, slots: list[int], episodes: list[dict[str, np.ndarray]],
                       horizon: int, seed: int, stride: int = 2, ood_horizon: int | None = None,
                       raw: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """`ood_horizon`: length of the dataset-vs-random-action rollouts (default `horizon`).
    `raw`, if given, receives the per-step and per-rollout values behind the numbers (plots)."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    lo, hi = model.action_low.cpu().numpy(), model.action_high.cpu().numpy()
    post = _posteriors(model, episodes)
    Ho = ood_horizon or horizon
    u_data: list[np.ndarray]
    u_ood: list[np.ndarray]
    uh_data: list[np.ndarray]
    uh_ood: list[np.ndarray]
    umax_data: list[np.ndarray]
    umax_ood: list[np.ndarray]
    u_all, err_all, err_mean_all, u_data, u_ood, uh_data, uh_ood = [], [], [], [], [], [], []
    umax_data, umax_ood = [], []
    step_of = []
    ood_kind: dict[str, dict[str, list]] = {k: {"data": [], "ood": []} for k in ("max_var", "mean_dis")}
    per_kind: dict[str, list[np.ndarray]] = {"max_var": [], "mean_dis": []}
    for ep, p, slot in zip(episodes, post, slots, strict=True):
        T = len(ep["action"])
        starts = np.arange(0, T - max(horizon, Ho), stride)
        h = torch.from_numpy(p["h"][starts])
        z = torch.from_numpy(p["z"][starts])
        sl = torch.full((len(starts),), slot, dtype=torch.long)
        # dataset vs uniform random actions: one step, and the mean (max) over an Ho-step rollout
        a_data = torch.from_numpy(np.stack([ep["action"][s:s + Ho] for s in starts]))
        a_rand = torch.from_numpy(rng.uniform(lo, hi, a_data.shape).astype(np.float32))
        for a, bucket, bucket_h, bucket_m, name in ((a_data, u_data, uh_data, umax_data, "data"),
                                                    (a_rand, u_ood, uh_ood, umax_ood, "ood")):
            out = model.imagine(h, z, lambda f, t, a=a: a[:, t], Ho, sl, gen)  # type: ignore[misc]
            bucket.append(out["uncertainty"][:, 0].numpy())
            bucket_h.append(out["uncertainty"].mean(1).numpy())
            bucket_m.append(out["uncertainty"].amax(1).numpy())
            for kind in ood_kind:
                o = model.imagine(h, z, lambda f, t, a=a: a[:, t],  # type: ignore[misc]
                                  Ho, sl, gen, kind)
                ood_kind[kind][name].append(o["uncertainty"].mean(1).numpy())
        ol = _open_loop(model, ep, p, starts, slot, horizon, gen)
        u_all.append(ol["u"])
        err_all.append(ol["err"])
        err_mean_all.append(ol["err_mean"])
        step_of.append(ol["step"])
        for kind in per_kind:
            per_kind[kind].append(ol[kind])
    u, err, err_mean, step = map(np.concatenate, (u_all, err_all, err_mean_all, step_of))
    if raw is not None:
        raw.update(u=u, err=err, step=step, u_data=np.concatenate(uh_data), u_ood=np.concatenate(uh_ood))
    res: dict[str, Any]
    res = {"uncertainty_error_spearman": spearman(u, err),
           "uncertainty_error_spearman_member_mean": spearman(u, err_mean),
           "uncertainty_error_spearman_by_step": [spearman(u[step == t], err[step == t])
                                                  for t in range(1, horizon + 1)],
           "ood_action_auroc": auroc(np.concatenate(uh_data), np.concatenate(uh_ood)),
           "ood_action_auroc_first_step": auroc(np.concatenate(u_data), np.concatenate(u_ood)),
           # the same rollouts paired by start state: P(u(s, uniform) > u(s, dataset)), the
           # ranking a policy's penalty needs at each state (the pooled AUROC also compares states)
           "ood_action_auroc_paired": paired_auroc(np.concatenate(uh_data), np.concatenate(uh_ood)),
           "ood_action_auroc_max_over_rollout": auroc(np.concatenate(umax_data), np.concatenate(umax_ood)),
           "ood_horizon": Ho,
           "uncertainty_steps": int(len(u))}
    for kind, vals in per_kind.items():
        res[f"uncertainty_error_spearman_{kind}"] = spearman(np.concatenate(vals), err)
        res[f"ood_action_auroc_{kind}"] = auroc(np.concatenate(ood_kind[kind]["data"]),
                                                np.concatenate(ood_kind[kind]["ood"]))
    return res


def plot_uncertainty(raw: dict[str, np.ndarray], res: dict, title: str, path: Path) -> None:
    """Two panels: each imagined step's uncertainty against its error (the Spearman check) and
    the rollouts' mean uncertainty under dataset vs uniform random actions (the AUROC check)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    sc = a.scatter(raw["u"], raw["err"], c=raw["step"], s=4, alpha=0.5, cmap="viridis")
    fig.colorbar(sc, ax=a, label="imagined step")
    a.set(xlabel="latent uncertainty of the imagined step", ylabel="error vs posterior of the real frame",
          title=f"Spearman {res['uncertainty_error_spearman']:.2f} (target >= 0.5)")
    both = np.concatenate([raw["u_data"], raw["u_ood"]])
    positive = bool((both > 0).all() and (raw["u"] > 0).all())  # log axes for the long right tail
    bins = np.geomspace(both.min(), both.max(), 41) if positive else np.histogram_bin_edges(both, 40)
    if positive:
        for ax in (a, b):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    b.hist(raw["u_data"], bins, alpha=0.6, density=True, label="dataset actions")
    b.hist(raw["u_ood"], bins, alpha=0.6, density=True, label="uniform random actions")
    b.set(xlabel=f"mean uncertainty over a {res['ood_horizon']}-step rollout", ylabel="density",
          title=f"OOD-action AUROC {res['ood_action_auroc']:.2f} (target >= 0.8)")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def action_separability(train_eps: list[dict[str, np.ndarray]], test_eps: list[dict[str, np.ndarray]],
                        low: np.ndarray, high: np.ndarray, seed: int, steps: int = 2000) -> float:
    """How out-of-distribution uniform random actions are in the data itself: AUROC of an MLP
    classifier of (proprioceptive state, action) -> dataset vs uniform, trained on the training
    episodes and scored on the held-out ones, one (state, action) at a time: near 0.5 the data
    already cover uniform actions (e.g. medium data, whose noise and detours spread the actions
    over the whole box). Not a bound on `ood_action_auroc`, whose H-step rollouts also show how
    consecutive actions hang together (the data's are correlated, uniform ones are not): the
    refit `bench` models exceed it on reach and push (experiments/04-world-model-benchmark)."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    def xy(eps: list[dict[str, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        st = np.concatenate([e["state"] for e in eps]).astype(np.float32)
        a = np.concatenate([e["action"] for e in eps]).astype(np.float32)
        u = rng.uniform(low, high, a.shape).astype(np.float32)
        x = np.concatenate([np.concatenate([st, a], 1), np.concatenate([st, u], 1)])
        return torch.from_numpy(x), torch.from_numpy(np.r_[np.zeros(len(a)), np.ones(len(a))].astype(np.float32)), len(a)

    xtr, ytr, _ = xy(train_eps)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(xtr.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                  torch.nn.ReLU(), torch.nn.Linear(128, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        i = torch.randint(len(xtr), (256,), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net((xtr[i] - mean) / std)[:, 0], ytr[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    xte, _, n = xy(test_eps)
    with torch.no_grad():
        score = net((xte - mean) / std)[:, 0].numpy()
    return auroc(score[:n], score[n:])


@torch.no_grad()
def prediction_losses(model: WorldModel, episodes: list[dict[str, np.ndarray]], horizon: int,
                      stride: int = 5, slot: int = 0) -> dict[str, float]:
    """H-step open-loop prediction from posterior states under the logged actions with the
    ensemble-mean prior: reward NLL (Normal(., 1), no constant) and image NLL per frame."""
    post = _posteriors(model, episodes)
    r_loss, i_loss = [], []
    for ep, p in zip(episodes, post, strict=True):
        T = len(ep["action"])
        starts = np.arange(0, T - horizon, stride)
        h, z = torch.from_numpy(p["h"][starts]), torch.from_numpy(p["z"][starts])
        sl = torch.full((len(starts),), slot, dtype=torch.long)
        for t in range(horizon):
            a = torch.from_numpy(ep["action"][starts + t])
            h = model.transition(h, z, a)
            mu, _ = model.prior(h, sl, a)
            z = mu.mean(1)
            feat = torch.cat([z, h], -1)
            r_hat = model.heads.reward(feat[:, None], sl)[:, 0].numpy()
            r_loss.append(0.5 * (r_hat - ep["reward"][starts + t]) ** 2)
            x = model.images_in(torch.from_numpy(ep["image"][starts + t + 1]))
            i_loss.append(0.5 * ((model.decoder(feat) - x) ** 2).sum((1, 2, 3)).numpy())
    return {"reward_nll": float(np.concatenate(r_loss).mean()), "image_nll": float(np.concatenate(i_loss).mean())}


def _adapted(model: WorldModel, cache, steps: int, eta: float, seed: int, heads: str = "all") -> WorldModel:
    """theta_j (`heads`: which parameters, see `adapt`) adapted with proximal weight eta;
    eta = inf is its limit, phi itself."""
    return task_model(model, 0) if np.isinf(eta) else adapt(model, cache, steps=steps, eta=eta, seed=seed,
                                                            heads=heads)


def select_eta(model: WorldModel, store: EpisodeStore, fit: list[int], grid: list[float], horizon: int,
               adapt_steps: int, seed: int, rule: str = "best", heads: str = "all") -> tuple[float, dict]:
    """eta by leave-one-episode-out validation inside the adaptation episodes (MerPO gives no
    value: "choose it by validation"): for each eta, adapt on all but one of the
    `fit` episodes and score the H-step reward NLL on the one left out. The task's other
    episodes, on which the benchmark scores, are never seen. An `inf` in the grid is phi itself
    (no adaptation), so adaptation has to beat phi in validation.

    `rule`: "best" takes the eta of lowest mean validation loss; "1se" (the one-standard-error
    rule, Hastie et al., ESL 7.10) the largest eta (closest to phi) whose mean is within one
    standard error of that minimum: with 5 validation episodes the minimum is noisy, and the
    rule prefers the stronger prior when the data cannot tell. Returns (eta, {"scores": eta ->
    mean, "per_episode": eta -> losses, "best": eta, "1se": eta})."""
    if rule not in ("best", "1se"):
        raise ValueError(f"unknown eta rule {rule!r}; expected best or 1se")
    eps = _episodes(store, fit)
    caches = [encode_store(model, store, fit[:i] + fit[i + 1:]) for i in range(len(fit))]
    per_ep = {}
    for e in grid:
        per_ep[f"{e:g}"] = [prediction_losses(_adapted(model, c, adapt_steps, e, seed, heads), [ep], horizon)["reward_nll"]
                            for c, ep in zip(caches, eps, strict=True)]
    scores = {k: float(np.mean(v)) for k, v in per_ep.items()}
    best = min(grid, key=lambda e: scores[f"{e:g}"])
    losses = np.asarray(per_ep[f"{best:g}"])
    se = float(losses.std(ddof=1) / np.sqrt(len(losses))) if len(losses) > 1 else 0.0
    one_se = max(e for e in grid if scores[f"{e:g}"] <= scores[f"{best:g}"] + se)
    info = {"scores": scores, "per_episode": per_ep, "best": best, "1se": one_se, "se_at_best": se}
    return (best if rule == "best" else one_se), info


def meta_checks(model: WorldModel, cfg, test_store: EpisodeStore, horizon: int, adapt_steps: int,
                eta: float, seed: int, n_adapt: int = 5, full_scratch: bool = True,
                workdir: Path | None = None, max_tasks: int | None = None,
                eta_sweep: list[float] | None = None, eta_grid: list[float] | None = None,
                eta_rule: str = "best", heads: list[str] | None = None, log=print) -> dict:
    """`eta_grid`: choose eta per task by `select_eta` with `eta_rule` (else the fixed `eta`);
    the model the other rule would have chosen is scored too (`adapted_other_rule`).
    `heads`: which theta_j parameters adapt (`adapt`); the first makes the headline keys,
    each other one is adapted and selected the same way and reported with a `_heads_H` suffix."""
    heads = list(heads or ["all"])
    other_rule = {"best": "1se", "1se": "best"}.get(eta_rule, "best")
    per_task = []
    for task in sorted(set(test_store.episode_task.tolist()))[:max_tasks]:
        eps = [int(e) for e in np.flatnonzero(test_store.episode_task == task)]
        if len(eps) <= n_adapt:
            continue
        fit, held = eps[:n_adapt], eps[n_adapt:]
        held_eps = _episodes(test_store, held)
        cache = encode_store(model, test_store, fit)
        phi = task_model(model, 0)
        eta_task, eta_info = eta, None
        if eta_grid:
            eta_task, eta_info = select_eta(model, test_store, fit, eta_grid, horizon, adapt_steps, seed, eta_rule,
                                            heads[0])
            log(f"task {task}: eta {eta_task:g} by leave-one-episode-out ({eta_rule}) {eta_info['scores']}")
        adapted = _adapted(model, cache, adapt_steps, eta_task, seed, heads[0])
        scratch = adapt(model, cache, steps=adapt_steps, init="scratch", seed=seed)
        row: dict[str, Any] = {"task": task, "eta": eta_task if np.isfinite(eta_task) else "inf (phi)", "phi": prediction_losses(phi, held_eps, horizon),
               "adapted": prediction_losses(adapted, held_eps, horizon),
               "scratch_heads": prediction_losses(scratch, held_eps, horizon)}
        if eta_info is not None:
            row["eta_validation"] = eta_info["scores"]
            row["eta_validation_per_episode"] = eta_info["per_episode"]
            row["eta_by_rule"] = {r: (eta_info[r] if np.isfinite(eta_info[r]) else "inf (phi)") for r in ("best", "1se")}
            other = eta_info[other_rule]
            row["adapted_other_rule"] = (row["adapted"] if other == eta_task else
                                         prediction_losses(_adapted(model, cache, adapt_steps, other, seed, heads[0]),
                                                           held_eps, horizon))
        for hd in heads[1:]:
            e_hd = eta
            if eta_grid:
                e_hd, info_hd = select_eta(model, test_store, fit, eta_grid, horizon, adapt_steps, seed, eta_rule, hd)
                row[f"eta_validation_heads_{hd}"] = info_hd["scores"]
            row[f"eta_heads_{hd}"] = e_hd if np.isfinite(e_hd) else "inf (phi)"
            row[f"adapted_heads_{hd}"] = prediction_losses(_adapted(model, cache, adapt_steps, e_hd, seed, hd),
                                                           held_eps, horizon)
        log(f"task {task}: phi/adapted/scratch heads evaluated")
        for e in eta_sweep or []:
            m = adapt(model, cache, steps=adapt_steps, eta=e, seed=seed)
            row[f"adapted_eta_{e:g}"] = prediction_losses(m, held_eps, horizon)
        if full_scratch and workdir is not None:
            scfg = dataclasses.replace(cfg, steps=adapt_steps, meta=False, holdout_every=0,
                                       split="", image_every=10**9, seed=seed)
            run = workdir / f"scratch_task{task}"
            train(test_store.path, scfg, run, overwrite=True, progress=False, episodes=fit, log=log)
            full, _ = load_world_model(run)
            row["scratch_model"] = prediction_losses(full, held_eps, horizon)
        per_task.append(row)
        log(f"task {task}: " + json.dumps({k: v for k, v in row.items() if k != "task"}))

    def ratio(a: str, b: str, key: str) -> float:
        return float(np.mean([r[a][key] for r in per_task]) / np.mean([r[b][key] for r in per_task]))

    out = {"meta_tasks": per_task, "adapt_steps": adapt_steps, "adapt_heads": heads,
           "eta": eta if not eta_grid else "selected",
           "eta_grid": eta_grid or None, "eta_rule": eta_rule if eta_grid else None, "adapt_episodes": n_adapt}
    if eta_grid and per_task:
        out[f"adapted_over_meta_loss_ratio_rule_{other_rule}"] = ratio("adapted_other_rule", "phi", "reward_nll")
    for e in eta_sweep or []:
        out[f"eta_sweep_{e:g}_over_meta_loss_ratio"] = ratio(f"adapted_eta_{e:g}", "phi", "reward_nll")
    for key, suffix in (("reward_nll", ""), ("image_nll", "_image")):
        out[f"adapted_over_meta{suffix}_loss_ratio"] = ratio("adapted", "phi", key)
        out[f"adapted_over_scratch_heads{suffix}_loss_ratio"] = ratio("adapted", "scratch_heads", key)
        if per_task and "scratch_model" in per_task[0]:
            out[f"adapted_over_scratch{suffix}_loss_ratio"] = ratio("adapted", "scratch_model", key)
        for hd in heads[1:]:
            out[f"adapted_over_meta{suffix}_loss_ratio_heads_{hd}"] = ratio(f"adapted_heads_{hd}", "phi", key)
            if per_task and "scratch_model" in per_task[0]:
                out[f"adapted_over_scratch{suffix}_loss_ratio_heads_{hd}"] = ratio(f"adapted_heads_{hd}",
                                                                                  "scratch_model", key)
    return out


def run_family(train_store: str, test_store: str, config: str, out_dir: Path, steps: int | None,
               run_dir: str | None, horizon: int, adapt_steps: int, eta: float | None, seed: int,
               full_scratch: bool, max_tasks: int | None = None, eta_sweep: list[float] | None = None,
               eta_grid: list[float] | None = None, ood_horizon: int | None = None, with_meta: bool = True,
               log=print, plot: Path | None = None, eta_rule: str = "best", heads: list[str] | None = None,
               refit: tuple[int, float, float] | None = None) -> dict:
    """`refit`: (steps, context weight, random-prior action gain) of `refit_prior_heads`, steps 0: off."""
    res: dict = {"train_store": train_store, "test_store": test_store}
    if run_dir is None:
        cfg = load_config(config)
        overrides: dict[str, Any] = {"steps": steps} if steps else {}
        if eta is not None:
            overrides["eta"] = eta
        cfg = dataclasses.replace(cfg, seed=seed, **overrides)
        run_dir = str(out_dir / (Path(train_store).stem + "_run"))
        summary = train(train_store, cfg, run_dir, overwrite=True, progress=sys.stderr.isatty(), log=log)
    elif (Path(run_dir) / "metrics.json").exists():
        summary = json.loads((Path(run_dir) / "metrics.json").read_text())
    else:  # a run still in progress: its last logged line
        last = json.loads((Path(run_dir) / "metrics.jsonl").read_text().splitlines()[-1])
        summary = {**last, "final": last}
    model, meta = load_world_model(run_dir)
    cfg = meta["config"]
    if refit and refit[0]:  # the prior heads refit on the training episodes' cached latents
        train_eps = json.loads((Path(run_dir) / "config.json").read_text())["train_episodes"]
        t_refit = time.perf_counter()
        res["refit_heads"] = {**refit_prior_heads(model, encode_store(model, EpisodeStore.open(train_store), train_eps),
                                                  steps=refit[0], context_scale=refit[1], seed=seed,
                                                  random_action_gain=refit[2]),
                              "context_scale": refit[1], "random_action_gain": refit[2],
                              "seconds": time.perf_counter() - t_refit}
        log(f"prior heads refit: {res['refit_heads']}")
    res.update({"run": run_dir, "train_steps": summary["step"], "train_seconds": summary.get("seconds"),
                "train_steps_per_s": summary["steps_per_s"], "train_frames_per_s": summary["frames_per_s"],
                "data_wait_share": summary["data_wait_share"], "final_train": summary.get("final")})
    store = EpisodeStore.open(train_store)
    for key, st in (("train_data", store), ("test_data", EpisodeStore.open(test_store))):
        col = (st.spec.env or {}).get("collection", {})  # which data: quality, tasks, episodes per task
        res[key] = {k: col[k] for k in ("family", "quality", "tasks", "episodes_per_task") if k in col}
    val = json.loads((Path(run_dir) / "config.json").read_text())["val_episodes"]
    if not val:
        raise ValueError(f"{run_dir}: the run held out no episodes (holdout_every=0)")
    slots = [meta["task_slots"].get(int(store.episode_task[e]), 0) for e in val]
    t0 = time.perf_counter()
    val_eps = _episodes(store, val)
    raw: dict[str, np.ndarray] = {}
    res.update(uncertainty_checks(model, slots, val_eps, horizon, seed, ood_horizon=ood_horizon, raw=raw))
    if plot is not None:
        plot_uncertainty(raw, res, f"{Path(train_store).name}: held-out windows of the training tasks", plot)
        res["uncertainty_plot"] = str(plot)
    if "state" in val_eps[0]:
        train_eps = json.loads((Path(run_dir) / "config.json").read_text())["train_episodes"]
        res["ood_action_separability"] = action_separability(
            _episodes(store, train_eps), val_eps, model.action_low.cpu().numpy(), model.action_high.cpu().numpy(), seed)
    if with_meta:
        res.update(meta_checks(model, cfg, EpisodeStore.open(test_store), horizon, adapt_steps,
                               cfg.eta if eta is None else eta, seed, full_scratch=full_scratch,
                               workdir=out_dir, max_tasks=max_tasks, eta_sweep=eta_sweep, eta_grid=eta_grid, eta_rule=eta_rule,
                               heads=heads, log=log))
    res["eval_seconds"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vmerpo bench world-model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", action="append", nargs=3, metavar=("NAME", "TRAIN_STORE", "TEST_STORE"),
                    required=True, help="a task family: name, training-task store, held-out-task store")
    ap.add_argument("--config", default="cpu", help="training preset or config file")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    ap.add_argument("--run", action="append", default=None,
                    help="use an already trained run per family (same order) instead of training")
    ap.add_argument("--horizon", type=int, default=5, help="imagined steps (LOMPO H=5)")
    ap.add_argument("--ood-horizon", type=int, default=None,
                    help="steps of the dataset-vs-uniform-action rollouts (default: --horizon)")
    ap.add_argument("--adapt-steps", type=int, default=300)
    ap.add_argument("--eta", type=float, default=None, help="proximal weight (default: the run's)")
    ap.add_argument("--no-full-scratch", action="store_true", help="skip the whole-model scratch baseline")
    ap.add_argument("--no-meta", action="store_true", help="uncertainty checks only (no held-out-task adaptation)")
    ap.add_argument("--max-test-tasks", type=int, default=None, help="held-out tasks evaluated")
    ap.add_argument("--eta-sweep", default="", help="also adapt with these etas, e.g. 0,1e-4,1e-3,1e-2")
    ap.add_argument("--eta-select", default="",
                    help="choose eta per held-out task from this grid by leave-one-episode-out validation "
                         "on its adaptation episodes, e.g. 1e-3,1e-2,0.1,1,10,inf (inf: phi, no adaptation; overrides --eta)")
    ap.add_argument("--eta-rule", choices=("best", "1se"), default="best",
                    help="with --eta-select: best (default) takes the eta of lowest validation loss; 1se the largest "
                         "eta within one standard error of it (the one-standard-error rule); the other rule's "
                         "ratio is reported too")
    ap.add_argument("--adapt-heads", default="all",
                    help="which theta_j parameters adapt to a held-out task, comma-separated from "
                         f"{', '.join(ADAPT_HEADS)}: all (reward + prior heads, MerPO 2a), reward (reward head), "
                         "reward_last (its last layer), reward_offset (its output bias alone); the first makes the headline "
                         "keys, the others are reported beside them (keys ending _heads_NAME)")
    exp = ap.add_argument_group("experimental options (off by default; docs/algorithms.md#experimental-options)")
    exp.add_argument("--refit-heads", type=int, default=0, metavar="STEPS",
                     help="first refit the prior heads on the training episodes' cached latents for STEPS steps "
                          "(vmerpo.benchmarks.prior_refit; one set for all tasks), default 0: off")
    exp.add_argument("--refit-context", type=float, default=30.0,
                    help="with --refit-heads: weight of the context term (uniform actions at the data's states)")
    exp.add_argument("--refit-action-gain", type=float, default=1.0,
                    help="with --refit-heads: gain on the action where the random prior functions read it "
                         "(WorldModelConfig.prior_random_action_gain; the heads are refit to those priors)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads for evaluation (2 threads collapse on shared cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="results/wm_bench", help="runs and scratch models go here")
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    heads = [h.strip() for h in args.adapt_heads.split(",") if h.strip()]
    bad = [h for h in heads if h not in ADAPT_HEADS]
    if bad or not heads:
        ap.error(f"--adapt-heads {args.adapt_heads!r}: expected a comma-separated list of {', '.join(ADAPT_HEADS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for i, (name, tr, te) in enumerate(args.family):
        run = args.run[i] if args.run else None
        results[name] = run_family(tr, te, args.config, out_dir / name, args.steps, run, args.horizon,
                                   args.adapt_steps, args.eta, args.seed, not args.no_full_scratch,
                                   args.max_test_tasks,
                                   [float(x) for x in args.eta_sweep.split(",") if x.strip()],
                                   [float(x) for x in args.eta_select.split(",") if x.strip()],
                                   args.ood_horizon, not args.no_meta, log=lambda m: print(m, file=sys.stderr),
                                   plot=(Path(args.out).with_name(f"{Path(args.out).stem}_{name}_uncertainty.png")
                                         if args.out else out_dir / name / "uncertainty.png"),
                                   eta_rule=args.eta_rule, heads=heads,
                                   refit=(args.refit_heads, args.refit_context, args.refit_action_gain))
    keys = ("uncertainty_error_spearman", "ood_action_auroc", "adapted_over_meta_loss_ratio",
            "adapted_over_scratch_loss_ratio", "ood_action_separability", "data_wait_share")
    results["summary"] = {k: {n: results[n].get(k) for n, _, _ in args.family} for k in keys}
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
