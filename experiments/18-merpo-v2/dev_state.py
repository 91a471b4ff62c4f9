"""Development probe of MerPO v2 on the state track (one quality, a few held-out tasks, draw 0).

    python experiments/18-merpo-v2/dev_state.py DATA_DIR [--tasks 4] [--meta-steps 300] ...

Prints zero-shot success of the embedding-conditioned meta-policy after its warm start and after
meta-training, and of MerPO adapted on each held-out log.
"""
import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from learning.merpo import MerPO, adapt_racs
from learning.task_embedding import TaskEmbedding, TaskEmbeddingConfig, condition
from sim.envs import make_env
from vmerpo.benchmarks.learning_state import (
    FeaturePolicy,
    Features,
    _torch,
    actor_fn,
    evaluate_policy,
    state_rac_config,
    transitions,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--quality", default="medium")
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--draw", type=int, default=0)
    p.add_argument("--meta-steps", type=int, default=300)
    p.add_argument("--inner-steps", type=int, default=10)
    p.add_argument("--adapt-steps", type=int, default=500)
    p.add_argument("--warm", type=int, default=2000)
    p.add_argument("--behaviour", default="advantage")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--lam", type=float, default=50.0)
    p.add_argument("--omega", type=float, default=0.4)
    p.add_argument("--meta-critic-steps", type=int, default=0)
    p.add_argument("--no-embedding", action="store_true")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--mode", default="merpo", choices=("merpo", "iql", "pooled_rac"))
    p.add_argument("--pooled-steps", type=int, default=3000)
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(1)
    t00 = time.perf_counter()
    d = Path(a.data)
    train = dict(np.load(d / f"{a.quality}_train.npz"))
    held = dict(np.load(d / f"{a.quality}_heldout_d{a.draw}.npz"))
    feats = Features.fit(train)
    rm, rs = float(train["reward"].mean()), float(max(train["reward"].std(), 1e-6))
    tasks = sorted(set(train["episode_task"].tolist()))
    hts = sorted(set(held["episode_task"].tolist()))[: a.tasks]
    tt = lambda log, t: _torch(transitions(log, feats, rm, rs, task=t))  # noqa
    datas = {t: tt(train, t) for t in tasks}
    hdatas = {t: tt(held, t) for t in hts}

    def ends_of(log, t):
        ep = np.flatnonzero(log["episode_task"] == t)
        return np.cumsum(np.diff(np.concatenate([[0], log["episode_ends"]]))[ep] - 1)

    zdim = 4
    if a.no_embedding:
        cd = datas
        hd = hdatas
        hz = {t: None for t in hts}
    else:
        te = TaskEmbedding(11, 4, tasks, TaskEmbeddingConfig(dim=zdim))
        te.fit(datas)
        g = np.random.default_rng(0)
        cd = {}
        for t in tasks:
            inf = te.infer(datas[t], ends_of(train, t), seed=t)
            z = inf.members[g.integers(len(inf.members), size=len(datas[t]["obs"]))]
            cd[t] = condition(datas[t], z)
        hz = {t: te.infer(hdatas[t], ends_of(held, t), seed=1000 + t).mean for t in hts}
        hd = {t: condition(hdatas[t], hz[t]) for t in hts}
    print(f"embedding + inference {time.perf_counter() - t00:.0f} s", flush=True)
    pooled = {k: torch.cat([cd[t][k] for t in tasks]) for k in cd[tasks[0]]}
    rc = dataclasses.replace(state_rac_config(), behaviour_weight=a.behaviour, awr_beta=a.beta, lam=a.lam,
                             omega=a.omega)
    from learning.merpo_train import preset
    cfg = copy.deepcopy(preset("cpu").merpo)
    cfg.rac, cfg.warm_start_steps, cfg.inner_steps, cfg.meta_critic_steps = rc, a.warm, a.inner_steps, a.meta_critic_steps
    merpo = MerPO(pooled["obs"].shape[1], 4, tasks, cfg)
    env = make_env("reach-v3", hand_init_noise=0.05, render=False)
    res = {"args": vars(a), "commit": commit()}

    def save(r):
        if a.out:
            Path(a.out).write_text(json.dumps(r, indent=1))

    def zero_shot(label):
        s = []
        for t in hts:
            r = evaluate_policy(env, _Cond(actor_fn(merpo.meta_actor), feats, hz[t]), t, a.eval_episodes)
            s.append(r["success_rate"])
        res[label] = s
        print(f"{label}: {np.mean(s):.2f} {s}  ({time.perf_counter() - t00:.0f} s)", flush=True)

    if a.mode == "iql":
        from vmerpo.benchmarks import peer
        npd = {k: v.numpy() for k, v in pooled.items()}
        algo = peer.make("iql", npd["obs"].shape[1], 4, peer.PeerConfig(), 0)
        t0 = time.perf_counter()
        peer.fit(algo, npd, a.pooled_steps, 0)
        print(f"iql fit {time.perf_counter() - t0:.0f} s")
        s = [evaluate_policy(env, _Cond(lambda x, al=algo: peer.act(al, x), feats, hz[t]), t, a.eval_episodes)["success_rate"] for t in hts]
        print(f"iql zero-shot with inferred embedding: {np.mean(s):.2f} {s}")
        res["iql_inferred_zero_shot"] = s
        return save(res)
    if a.mode == "pooled_rac":
        t0 = time.perf_counter()
        merpo.warm_start(pooled)
        zero_shot("warm_start_zero_shot")
        rac = adapt_racs(None, None, [pooled], None, dataclasses.replace(rc, omega=1.0), a.pooled_steps, [0])[0]
        print(f"pooled rac {time.perf_counter() - t0:.0f} s")
        merpo.meta_actor.load_state_dict(rac.actor.state_dict())
        zero_shot("pooled_rac_zero_shot")
        racs = adapt_racs(rac.actor, rac.critic, [hd[t] for t in hts], None, rc, a.adapt_steps, list(range(len(hts))))
        s = [evaluate_policy(env, _Cond(actor_fn(r.actor), feats, hz[t]), t, a.eval_episodes)["success_rate"]
             for r, t in zip(racs, hts, strict=True)]
        print(f"merpo adapted from pooled rac (omega {a.omega}): {np.mean(s):.2f} {s} ({time.perf_counter() - t00:.0f} s)", flush=True)
        res["merpo_from_pooled_rac"] = s
        return save(res)
    merpo.warm_start(pooled)
    zero_shot("warm_start_zero_shot")
    t0 = time.perf_counter()
    for i in range(a.meta_steps):
        st = merpo.meta_step(cd, None)
        if i % 100 == 0:
            print(i, {k: round(v, 3) for k, v in st.items() if k in ("q", "behaviour_nll", "meta_kl", "actor_loss")}, flush=True)
    res["meta_train_s"] = time.perf_counter() - t0
    zero_shot("meta_policy_zero_shot")
    racs = adapt_racs(merpo.meta_actor, merpo.meta_critic, [hd[t] for t in hts], None, rc, a.adapt_steps,
                      list(range(len(hts))))
    s = [evaluate_policy(env, _Cond(actor_fn(r.actor), feats, hz[t]), t, a.eval_episodes)["success_rate"]
         for r, t in zip(racs, hts, strict=True)]
    res["merpo"] = s
    print(f"merpo adapted: {np.mean(s):.2f} {s} ({time.perf_counter() - t00:.0f} s)", flush=True)
    env.close()
    save(res)


def commit() -> str:
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return "unknown"


class _Cond(FeaturePolicy):
    """State features with the task embedding appended (None: no embedding)."""

    def __init__(self, fn, feats, z):
        super().__init__(fn, feats)
        self.z = z

    def act(self, observation):
        x = self.feats(observation["state"][None])
        if self.z is not None:
            x = np.concatenate([x, self.z[None].astype(np.float32)], -1)
        return np.clip(np.asarray(self.act_fn(x), np.float32)[0], -1.0, 1.0)


if __name__ == "__main__":
    main()
