"""Cached posterior latents and latent rollouts: the learning stage never touches images again.

`encode_store` runs the deployment filter (`WorldModel.step`'s mode form: z = posterior mean)
over every whole episode once and keeps s_t = [z_t, h_t] per row, with the row's action,
reward and terminal flag, in the store's episode structure (`ArraySource`), so the same
`SequenceSampler` draws windows of latents. `rollout` imagines H steps from such states.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from learning.sampler import ArraySource
from learning.store import EpisodeStore
from perception.world_model import WorldModel

LATENT_KEYS = ("feat", "z_std", "action", "reward", "terminal")


@dataclass
class LatentCache:
    """Per-row latents: feat [T, Z+D] = [z, h] (s_t, the state after observing row t),
    z_std [T, Z] (posterior std), action, reward, terminal; episode_ends/episode_task as in
    the store; `episodes` are the store's episode indices they came from."""

    arrays: dict[str, np.ndarray]
    episode_ends: np.ndarray
    episode_task: np.ndarray
    episodes: np.ndarray
    info: dict = field(default_factory=dict)

    def source(self) -> ArraySource:
        return ArraySource(self.arrays, self.episode_ends, self.episode_task)

    def save(self, path: str | Path) -> None:
        """Atomic (temp file + rename): a run killed while saving resumes from no cache rather
        than from a truncated one."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, episode_ends=self.episode_ends, episode_task=self.episode_task,
                     episodes=self.episodes, info=np.array(json.dumps(self.info)),
                     **self.arrays)  # type: ignore[arg-type]  # stubs: ** may fill allow_pickle
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> LatentCache:
        with np.load(path) as f:
            arrays = {k: f[k] for k in LATENT_KEYS if k in f}
            return cls(arrays, f["episode_ends"], f["episode_task"], f["episodes"],
                       json.loads(str(f["info"])))


@torch.no_grad()
def filter_episodes(model: WorldModel, images: Sequence[np.ndarray], actions: Sequence[np.ndarray],
                    states: Sequence[np.ndarray] | None = None, device: str = "cpu",
                    chunk: int = 512) -> list[dict[str, np.ndarray]]:
    """Run the mode filter over whole episodes (batched, padded at the end: the filter is
    causal, so padding never changes earlier rows). Returns h, z, z_std per episode."""
    model.eval()
    lengths = [len(a) for a in actions]
    embeds = []
    for i, img in enumerate(images):
        st = None if states is None or not model.cfg.state_dim else states[i]
        parts = []
        for s in range(0, len(img), chunk):
            x = model.images_in(torch.from_numpy(np.ascontiguousarray(img[s:s + chunk])).to(device))
            parts.append(model.encode(x, None if st is None else torch.from_numpy(st[s:s + chunk]).to(device)))
        embeds.append(torch.cat(parts))
    L = max(lengths)
    E = torch.zeros(len(embeds), L, embeds[0].shape[-1], device=device)
    A = torch.zeros(len(embeds), L, actions[0].shape[-1], device=device)
    for i, (e, a) in enumerate(zip(embeds, actions, strict=True)):
        E[i, :len(e)] = e
        A[i, :len(a)] = torch.from_numpy(np.asarray(a, np.float32)).to(device)
    post = model.observe(E, A)
    return [{"h": post["h"][i, :n].cpu().numpy(), "z": post["z"][i, :n].cpu().numpy(),
             "z_std": post["post_std"][i, :n].cpu().numpy()} for i, n in enumerate(lengths)]


def encode_store(model: WorldModel, store: EpisodeStore, episodes: Sequence[int] | None = None,
                 device: str = "cpu", batch_episodes: int = 32,
                 progress: Callable[[int, int], None] | None = None) -> LatentCache:
    """Encode (a subset of) a store's episodes once into posterior latents."""
    eps = list(range(store.n_episodes)) if episodes is None else [int(e) for e in episodes]
    use_state = bool(model.cfg.state_dim)
    out: dict[str, list[np.ndarray]] = {k: [] for k in LATENT_KEYS}
    for b in range(0, len(eps), batch_episodes):
        group = eps[b:b + batch_episodes]
        rows = [(int(store.episode_starts[e]), int(store.episode_ends[e])) for e in group]
        imgs = [store.read("image", s, t) for s, t in rows]
        acts = [store.read("action", s, t) for s, t in rows]
        sts = [store.read("state", s, t) for s, t in rows] if use_state else None
        for (s, t), res in zip(rows, filter_episodes(model, imgs, acts, sts, device), strict=True):
            out["feat"].append(np.concatenate([res["z"], res["h"]], -1))
            out["z_std"].append(res["z_std"])
            out["action"].append(store.read("action", s, t))
            out["reward"].append(store.read("reward", s, t))
            out["terminal"].append(store.read("terminal", s, t))
        if progress:
            progress(min(b + batch_episodes, len(eps)), len(eps))
    lengths = [len(a) for a in out["reward"]]
    return LatentCache({k: np.concatenate(v) for k, v in out.items()},
                       np.cumsum(lengths).astype(np.int64), store.episode_task[eps].astype(np.int64),
                       np.asarray(eps, np.int64),
                       {"store": store.path, "stoch": model.cfg.stoch, "deter": model.cfg.deter})


def rollout(model: WorldModel, feat: torch.Tensor, policy: Callable[[torch.Tensor, int], torch.Tensor],
            horizon: int, generator: torch.Generator, slot: int | torch.Tensor = 0,
            uncertainty: str | None = None, sample: bool = True) -> dict[str, torch.Tensor]:
    """Imagine `horizon` steps from posterior states feat [B, Z+D] of real rows under
    `policy(feat, t) -> action` (robot units), a random prior member per step and sequence
    (sample=False: that member's mean, a mode like the real rows' latents).

    Returns feat [B, H+1, F] (start included), action [B, H, A], reward [B, H] (of each
    imagined transition) and uncertainty [B, H] (the model's penalty, LOMPO's u).
    """
    Z = model.cfg.stoch
    z, h = feat[:, :Z], feat[:, Z:]
    if not torch.is_tensor(slot):
        slot = torch.full((feat.shape[0],), int(slot), dtype=torch.long, device=feat.device)
    return model.imagine(h, z, policy, horizon, slot, generator, uncertainty, sample)


def replay_actions(actions: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A 'policy' that replays logged actions [B, H, A] (open-loop prediction)."""
    return lambda feat, t: actions[:, t]
