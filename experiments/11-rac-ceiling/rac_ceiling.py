"""How far single-task offline RL gets from a 5-episode medium log, by input representation:
RAC with omega = 1 (behaviour regularizer only), real transitions and their true rewards only
(no model rollouts, no meta-training), on

- `state`: the true 11-d proprioceptive state (end effector, gripper, joints), z-scored;
- `latent`: the world model's posterior features s = [z, h] as the benchmark uses them;
- `latent-norm`: the same, z-scored;
- `latent+state`: [z, h] and the z-scored state; `latent-norm+state`: all z-scored.

Each adapted policy runs `--episodes` closed-loop MuJoCo episodes on its task (default 1:
with Meta-World's fixed start the episodes of one task are deterministic; a store collected
with `--hand-init-noise` is evaluated with the same random starts, then use more). A ceiling
test for the learning benchmark's medium target: if the oracle state with the true rewards does
not beat the log, the image pipeline cannot be what holds it back.

    vmerpo collect --env reach-v3 --tasks 40,41,42,43,44,45 --episodes-per-task 5 --quality medium --out LOG.zarr
    python experiments/11-rac-ceiling/rac_ceiling.py --data LOG.zarr --world-model RUN/world_model \\
        --features state,latent,latent-norm,latent+state,latent-norm+state --lam 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

FEATURES = ("state", "latent", "latent-norm", "latent+state", "latent-norm+state")


def features(kind: str, feat, state):
    """(rows [T, F], mean [F], std [F]) for one feature kind; the caller applies (x - mean) / std."""
    import numpy as np

    if kind == "state":
        x = state
        return x, x.mean(0), x.std(0) + 1e-3
    x = feat if "+state" not in kind else np.concatenate([feat, state], 1)
    mean, std = x.mean(0), x.std(0) + 1e-3
    if "norm" not in kind:  # the latent part as it is; the state part z-scored
        mean[: feat.shape[1]], std[: feat.shape[1]] = 0.0, 1.0
    return x, mean, std


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", required=True, help="episode store with a few episodes per task")
    p.add_argument("--world-model", help="world-model run directory (needed for the latent features)")
    p.add_argument("--family", default="reach-v3")
    p.add_argument("--tasks", default="", help="comma-separated task ids (default: every task in --data)")
    p.add_argument("--features", default="state,latent", help=f"comma-separated, from {', '.join(FEATURES)}")
    p.add_argument("--lam", default="5", help="comma-separated behaviour weights lambda")
    p.add_argument("--steps", type=int, default=2000, help="RAC updates per policy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=1, help="evaluation episodes per policy (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    kinds = [k for k in a.features.split(",") if k]
    bad = [k for k in kinds if k not in FEATURES]
    if bad:
        p.error(f"unknown features {bad}; choose from {', '.join(FEATURES)}")
    if any(k != "state" for k in kinds) and not a.world_model:
        p.error("latent features need --world-model RUN_DIR")

    import numpy as np
    import torch

    from learning.latents import encode_store
    from learning.meta_model import task_model
    from learning.rac import RAC, RACConfig
    from learning.store import EpisodeStore
    from learning.world_model_train import load_world_model
    from sim.envs import make_env
    from sim.evaluate import evaluate

    store = EpisodeStore.open(a.data)
    tasks = [int(t) for t in a.tasks.split(",") if t] or sorted(set(store.episode_task.tolist()))
    wm = load_world_model(a.world_model)[0] if a.world_model else None
    theta = task_model(wm, 0) if wm is not None else None
    env = make_env(a.family, hand_init_noise=store.spec.env.get("hand_init_noise_m", 0.0))
    dev = torch.device(a.device)
    t_ = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    rows = []
    for task in tasks:
        eps = [int(e) for e in np.flatnonzero(store.episode_task == task)]
        if not eps:
            raise SystemExit(f"rac_ceiling: task {task} has no episodes in {a.data}")
        rows_ = [store.episode(e, ["state", "action", "reward"]) for e in eps]
        state, reward, action = (np.concatenate([r[k] for r in rows_]).astype(np.float32)
                                 for k in ("state", "reward", "action"))
        action = np.clip(action, -1, 1)
        ends = np.cumsum([len(r["reward"]) for r in rows_])
        idx = np.concatenate([np.arange(s, e - 1) for s, e in zip(np.r_[0, ends[:-1]], ends, strict=True)])
        feat = (encode_store(wm, store, eps).arrays["feat"].astype(np.float32) if wm is not None else None)
        log_success = float(store.episode_success[eps].mean())
        for kind in kinds:
            x, mean, std = features(kind, feat, state)
            xn = (x - mean) / std
            data = {"obs": t_(xn[idx]), "next_obs": t_(xn[idx + 1]), "act": t_(action[idx]),
                    "rew": t_(reward[idx] / (reward[idx].std() + 1e-6)), "done": torch.zeros(len(idx))}
            data = {k: v.to(dev) for k, v in data.items()}
            for lam in [float(v) for v in a.lam.split(",")]:
                rac = RAC(xn.shape[1], action.shape[1], RACConfig(lam=lam, omega=1.0, cql_states=64), dev, seed=a.seed)
                g = torch.Generator().manual_seed(a.seed)
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    j = torch.randint(len(idx), (256,), generator=g).to(dev)
                    rac.update({k: v[j] for k, v in data.items()}, omega=1.0)
                seconds = time.perf_counter() - t0
                actor = rac.actor.cpu().eval()

                class Policy:
                    def reset(self, act_dim=action.shape[1]):
                        if wm is not None:
                            self.h, self.z = torch.zeros(1, wm.cfg.deter), torch.zeros(1, wm.cfg.stoch)
                        self.prev = torch.zeros(1, act_dim)

                    def seed(self, s):
                        pass

                    def set_applied_action(self, applied):
                        self.prev = t_(applied).reshape(1, -1)

                    @torch.no_grad()
                    def act(self, obs, kind=kind, mean=mean, std=std, actor=actor):
                        s = obs["state"][None].astype(np.float32)
                        if kind == "state":
                            f = s
                        else:
                            st = t_(s) if wm.cfg.state_dim else None
                            self.h, self.z = theta.step(torch.from_numpy(obs["image"])[None], self.prev, self.h, self.z, st)
                            f = torch.cat([self.z, self.h], -1).numpy()
                            if "+state" in kind:
                                f = np.concatenate([f, s], 1)
                        return actor.mean_unit(t_((f - mean) / std))[0].numpy()

                r = evaluate(Policy(), env, [task], a.episodes, seed=a.seed)
                row = {"task": task, "features": kind, "lam": lam, "success": r["success_rate"],
                       "return": r["mean_return"], "log_success": log_success, "train_seconds": seconds}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for kind in kinds:
        for lam in sorted({r["lam"] for r in rows}):
            sel = [r for r in rows if r["features"] == kind and r["lam"] == lam]
            summary[f"{kind} lam={lam:g}"] = {"success": float(np.mean([r["success"] for r in sel])),
                                              "return": float(np.mean([r["return"] for r in sel])), "tasks": len(sel)}
    summary["log"] = {"success": float(np.mean([r["log_success"] for r in rows]))}
    for k, v in summary.items():
        print(f"{k:28s} " + " ".join(f"{kk} {vv:.2f}" for kk, vv in v.items()))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"rows": rows, "summary": summary, "args": vars(a)}, indent=1))
    return 0


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # the timings in the README: one thread per run
    sys.exit(main())
