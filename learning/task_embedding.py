"""The meta-model's task variable: a low-dimensional embedding per task, learned with a shared
reward head, and inferred for a new task from its small log (docs/algorithms.md, MerPO v2).

    fit      r_hat(s, a, s', e_n) on every meta-train task n's transitions; the head and one
             embedding e_n per task learned jointly (an L2 pull keeps the embeddings near 0)
    infer    a new task's log: the head frozen, e solved from the log's rewards by gradient
             steps; `members` solutions, each from another meta-train embedding as start and
             on a bootstrap resample of the log's episodes: their mean is the estimate, their
             spread says how sure it is (a bootstrap posterior)
    condition  [s, e] is what policies and critics take: every task learner, the meta-policy
             pi_c and Q_meta see the task they act in

The embeddings are returned standardised (zero mean, unit std per dimension over the meta-train
tasks) so that they enter the networks on the scale of the standardised state. A log with
constant rewards carries no task information: `infer` raises `NoTaskSignal` and the caller
falls back to the meta-policy at the mean embedding.

Why a reward head: the meta-world families here differ only in their reward (the goal), the
dynamics are shared. Measured on the state track's reach medium logs (experiments/18-merpo-v2):
a reward model conditioned on the true goal and solved for the goal places held-out goals a few
cm off; a whole reward MLP re-fitted on 750 transitions (MerPO v1's task inference) does not
generalise.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from learning.rac import mlp
from perception.networks import take_rows


class NoTaskSignal(ValueError):
    """The log's rewards are (nearly) constant: nothing to infer the task from."""


@dataclass
class TaskEmbeddingConfig:
    dim: int = 4  # a few dimensions: reach/push goals are 3-d
    hidden: int = 128
    layers: int = 2
    fit_steps: int = 3000
    lr: float = 1e-3
    batch: int = 512  # rows per task per fit step come from one pooled draw of this size
    l2: float = 1e-3  # pull of the embeddings towards 0 (keeps them on one scale)
    infer_steps: int = 400
    infer_lr: float = 5e-2
    members: int = 8  # bootstrap posterior members per inferred task
    infer_batch: int = 256  # rows per member and inference step
    prior: float = 1e-2  # weight of the N(mean, std) prior of the meta-train embeddings in inference
    min_reward_std: float = 1e-4  # below this (in normalised reward units) the log has no task signal
    # N(0, input_noise) on the head's state inputs while fitting (standardised units): a head
    # that cannot read the task off the exact state has to use the embedding [ours; an option]
    input_noise: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Inference:
    """A new task's embedding: the members' mean (`mean`), their spread (`std`) and each
    member (standardised units), and the fit's mean squared reward error."""

    mean: np.ndarray
    std: np.ndarray
    members: np.ndarray
    reward_mse: float
    # How much better the inferred embeddings predict the rewards of episodes they were not fitted
    # on than the meta-train tasks' mean embedding does: 1 - mse(member) / mse(mean task) over
    # each bootstrap member's out-of-bag episodes (1: the log pins the task down, 0 or below: the
    # embedding explains nothing new). None without episode boundaries or out-of-bag episodes.
    evidence: float | None = None

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "members": self.members.tolist(),
                "reward_mse": self.reward_mse, "evidence": self.evidence}


class TaskEmbedding(nn.Module):
    """r_hat(s, a, s', e) with one learned embedding per meta-train task."""

    z_mean: torch.Tensor  # buffers: the meta-train embeddings' mean and std (standardisation)
    z_std: torch.Tensor

    def __init__(self, obs_dim: int, act_dim: int, tasks: list[int], cfg: TaskEmbeddingConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tasks = list(tasks)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        g = torch.Generator().manual_seed(cfg.seed)
        self.embeddings = nn.Parameter(0.1 * torch.randn(len(tasks), cfg.dim, generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.head = mlp(2 * obs_dim + act_dim + cfg.dim, cfg.hidden, cfg.layers, 1)
        self.register_buffer("z_mean", torch.zeros(cfg.dim))
        self.register_buffer("z_std", torch.ones(cfg.dim))

    def reward(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Predicted (normalised) reward; `e` raw embedding(s), [dim] or [N, dim]."""
        e = e.expand(obs.shape[0], -1) if e.dim() == 1 else e
        return self.head(torch.cat([obs, act, next_obs, e], -1)).squeeze(-1)

    # -- meta-train ------------------------------------------------------------------------------
    def fit(self, datas: dict[int, dict[str, torch.Tensor]], steps: int | None = None) -> dict[str, float]:
        """Head and embeddings on every meta-train task's transitions (`datas[task]`: obs, act,
        rew, next_obs); returns the last step's reward error."""
        cfg = self.cfg
        missing = [t for t in self.tasks if t not in datas]
        if missing:
            raise ValueError(f"no transitions for meta-train task(s) {missing}")
        obs = torch.cat([datas[t]["obs"] for t in self.tasks])
        act = torch.cat([datas[t]["act"] for t in self.tasks])
        nxt = torch.cat([datas[t]["next_obs"] for t in self.tasks])
        rew = torch.cat([datas[t]["rew"] for t in self.tasks])
        tid = torch.cat([torch.full((len(datas[t]["obs"]),), i, dtype=torch.long) for i, t in enumerate(self.tasks)])
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        mse = torch.zeros(())
        for _ in range(cfg.fit_steps if steps is None else steps):
            i = torch.randint(len(obs), (cfg.batch,), generator=g)
            o, o2 = obs[i], nxt[i]
            if cfg.input_noise:
                o = o + cfg.input_noise * torch.randn(o.shape, generator=g)
                o2 = o2 + cfg.input_noise * torch.randn(o2.shape, generator=g)
            pred = self.reward(o, act[i], o2, take_rows(self.embeddings, tid[i]))
            mse = ((pred - rew[i]) ** 2).mean()
            loss = mse + cfg.l2 * (self.embeddings ** 2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            self.z_mean.copy_(self.embeddings.mean(0))
            self.z_std.copy_(self.embeddings.std(0).clamp_min(1e-3))
        return {"reward_mse": float(mse.detach())}

    def standardise(self, e: torch.Tensor | np.ndarray) -> np.ndarray:
        e = torch.as_tensor(e, dtype=torch.float32)
        return ((e - self.z_mean) / self.z_std).detach().cpu().numpy().astype(np.float32)

    def raw(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised embedding(s) back to the head's input units (the inverse of `standardise`)."""
        return z * self.z_std.to(z) + self.z_mean.to(z)

    def train_embeddings(self) -> dict[int, np.ndarray]:
        """Each meta-train task's own embedding, standardised."""
        return {t: self.standardise(self.embeddings[i]) for i, t in enumerate(self.tasks)}

    # -- a new task --------------------------------------------------------------------------------
    def infer(self, data: dict[str, torch.Tensor], episode_ends: np.ndarray | None = None,
              seed: int = 0) -> Inference:
        """The embedding of the task whose transitions `data` holds, the head frozen. With
        `episode_ends` (row index after each episode's last transition) every member fits a
        bootstrap resample of the episodes, else of the rows."""
        cfg = self.cfg
        rew = data["rew"]
        if len(rew) < 2 or float(rew.std()) < cfg.min_reward_std:
            raise NoTaskSignal(f"the log's rewards are constant ({float(rew.mean()):.4g} on all {len(rew)} "
                               "transitions): nothing to infer the task from")
        head = copy.deepcopy(self.head).requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        n = len(rew)
        episodes = None
        if episode_ends is not None:
            ends = np.asarray(episode_ends, np.int64)
            if not len(ends) or ends[-1] != n or (np.diff(np.concatenate([[0], ends])) < 0).any():
                raise ValueError(f"episode_ends {ends.tolist()[:5]}...: must rise to the log's {n} transitions")
            starts = np.concatenate([[0], ends[:-1]])
            episodes = [torch.arange(s, t) for s, t in zip(starts, ends, strict=True) if t > s]
        prior_mean, prior_std = self.z_mean.detach(), self.z_std.detach()
        M = cfg.members
        rows = []  # each member's resample of the log's rows
        out_of_bag: list[torch.Tensor | None] = [None]  # rows of the episodes a member did not draw
        for m in range(M):
            if m == 0:  # member 0 fits the log as it is
                rows.append(torch.arange(n))
            elif episodes is not None:
                pick = torch.randint(len(episodes), (len(episodes),), generator=g)
                rows.append(torch.cat([episodes[int(k)] for k in pick]))
                oob = sorted(set(range(len(episodes))) - set(pick.tolist()))
                out_of_bag.append(torch.cat([episodes[k] for k in oob]) if oob else None)
            else:
                rows.append(torch.randint(n, (n,), generator=g))
                out_of_bag.append(None)
        inp = torch.cat([data["obs"], data["act"], data["next_obs"]], -1)
        with torch.no_grad():
            e = self.embeddings.detach()[torch.randint(len(self.tasks), (M,), generator=g)].clone()
        e.requires_grad_(True)
        opt = torch.optim.Adam([e], lr=cfg.infer_lr)
        B = min(cfg.infer_batch, n)
        for _ in range(cfg.infer_steps):  # all members at once, a minibatch of their rows each
            idx = torch.stack([r[torch.randint(len(r), (B,), generator=g)] for r in rows])  # [M, B]
            x = torch.cat([inp[idx], e[:, None].expand(M, B, -1)], -1)
            mse = ((head(x).squeeze(-1) - rew[idx]) ** 2).mean(1)  # [M]
            loss = mse.sum() + cfg.prior * (((e - prior_mean) / prior_std) ** 2).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():  # each member's error on its whole resample
            errors = [float(((head(torch.cat([inp[r], e[m].expand(len(r), -1)], -1)).squeeze(-1) - rew[r]) ** 2).mean())
                      for m, r in enumerate(rows)]
            mse_z, mse_mean = 0.0, 0.0
            for m, r in enumerate(out_of_bag):
                if r is not None:
                    x = inp[r]
                    mse_z += float(((head(torch.cat([x, e[m].expand(len(r), -1)], -1)).squeeze(-1) - rew[r]) ** 2).mean())
                    mse_mean += float(((head(torch.cat([x, prior_mean.expand(len(r), -1)], -1)).squeeze(-1)
                                        - rew[r]) ** 2).mean())
            evidence = 1.0 - mse_z / mse_mean if mse_mean > 0 else None
        members = list(e.detach())
        z = self.standardise(torch.stack(members))
        return Inference(mean=z.mean(0), std=z.std(0), members=z, reward_mse=float(np.mean(errors)),
                         evidence=evidence)

    def mean_embedding(self) -> np.ndarray:
        """The meta-train tasks' mean embedding (standardised: zeros), the fallback's task."""
        return np.zeros(self.cfg.dim, np.float32)


def condition(data: dict[str, torch.Tensor], z: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Transitions with the task embedding appended to obs and next_obs: `z` one embedding [dim]
    for every row, or one per row [N, dim]."""
    z = torch.as_tensor(np.asarray(z, np.float32), device=data["obs"].device)
    z = z.expand(len(data["obs"]), -1) if z.dim() == 1 else z
    out = dict(data)
    out["obs"] = torch.cat([data["obs"], z], -1)
    out["next_obs"] = torch.cat([data["next_obs"], z], -1)
    return out


def goal_probe(train_z: np.ndarray, train_goals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares affine map embedding -> true task parameter (the goal), fitted on the
    meta-train tasks; returns (W, b) with goal ~ z @ W + b. Used only to report how far an
    inferred embedding places the goal, where the true goal is known."""
    X = np.concatenate([train_z, np.ones((len(train_z), 1), np.float32)], 1)
    sol, *_ = np.linalg.lstsq(X, train_goals, rcond=None)
    return sol[:-1], sol[-1]
