"""The pooled offline-RL peer: d3rlpy's IQL and BC on the benchmark's own features.

d3rlpy (a maintained offline-RL library, pinned in requirements-peer.txt and installed by
`make peer`, never at run time) trains on exactly the transitions our learners get: the same
normalised observations, actions scaled to [-1, 1] and normalised rewards. The adapter is
the mini-batch: d3rlpy's own sampler builds each batch in Python (2.4 ms per 256 rows,
measured), so batches are drawn here with numpy and handed to `algo.update` as d3rlpy's
`TransitionMiniBatch`; the learning itself (losses, networks, optimisers, targets) is
d3rlpy's. Fine-tuning continues the same learner on the held-out log.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

PEER_VERSION = "2.8.1"


def available() -> str | None:
    """None when d3rlpy is importable at the pinned version, else why not (one line)."""
    try:
        import d3rlpy
    except ImportError:
        return "d3rlpy is not installed: run `make peer` (installs d3rlpy 2.8.1 and its pins into .venv)"
    if d3rlpy.__version__ != PEER_VERSION:
        return f"d3rlpy {d3rlpy.__version__} is installed, the benchmark pins {PEER_VERSION}: run `make peer`"
    return None


def _quiet() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@dataclass(frozen=True)
class PeerConfig:
    hidden: tuple[int, ...] = (256, 256)  # d3rlpy's default vector encoder
    batch: int = 256
    # IQL (Kostrikov et al. 2022; d3rlpy's defaults): expectile 0.7, temperature 3, max weight 100
    expectile: float = 0.7
    weight_temp: float = 3.0
    max_weight: float = 100.0


def make(kind: str, obs_dim: int, act_dim: int, cfg: PeerConfig, seed: int) -> Any:
    """A d3rlpy IQL or BC learner built for these shapes (no dataset needed)."""
    why = available()
    if why:
        raise RuntimeError(why)
    _quiet()
    import d3rlpy
    import torch

    d3rlpy.seed(seed)
    torch.manual_seed(seed)
    enc = d3rlpy.models.VectorEncoderFactory(hidden_units=list(cfg.hidden))
    if kind == "iql":
        conf: Any = d3rlpy.algos.IQLConfig(batch_size=cfg.batch, expectile=cfg.expectile,
                                            weight_temp=cfg.weight_temp, max_weight=cfg.max_weight,
                                            actor_encoder_factory=enc, critic_encoder_factory=enc,
                                            value_encoder_factory=enc)
    elif kind == "bc":
        conf = d3rlpy.algos.BCConfig(batch_size=cfg.batch, encoder_factory=enc)
    else:
        raise ValueError(f"unknown peer {kind!r}: iql or bc")
    algo = conf.create(device="cpu:0")
    algo.create_impl((obs_dim,), act_dim)
    return algo


def fit(algo: Any, data: dict[str, np.ndarray], steps: int, seed: int) -> dict[str, float]:
    """`steps` d3rlpy updates on transitions {obs, act, rew, next_obs, done} (numpy)."""
    from d3rlpy.dataset import TransitionMiniBatch

    rng = np.random.default_rng(seed)
    n = len(data["obs"])
    B = algo.config.batch_size
    ones = np.ones((B, 1), np.float32)
    act_zeros = np.zeros((B, data["act"].shape[1]), np.float32)
    last: dict[str, float] = {}
    for _ in range(steps):
        i = rng.integers(n, size=B)
        batch = TransitionMiniBatch(
            observations=data["obs"][i], actions=data["act"][i], rewards=data["rew"][i, None],
            next_observations=data["next_obs"][i], next_actions=act_zeros,
            terminals=data["done"][i, None], intervals=ones, transitions=[])
        last = algo.update(batch)
    return {k: float(v) for k, v in last.items()}


def finetuned(algo: Any, data: dict[str, np.ndarray], steps: int, seed: int) -> Any:
    """A copy of `algo` trained `steps` more updates on `data` (the pooled learner is kept)."""
    out = copy.deepcopy(algo)
    fit(out, data, steps, seed)
    return out


def act(algo: Any, obs: np.ndarray) -> np.ndarray:
    """Deterministic action(s) in [-1, 1] for observations [B, obs_dim]."""
    return np.asarray(algo.predict(np.asarray(obs, np.float32)), np.float32)


def actor_mean(algo: Any) -> Any:
    """IQL's deterministic pre-tanh action as a plain torch module (a copy of d3rlpy's policy
    encoder and mean layer), for `learning.export.DeployedPolicy`: the peer then runs behind the
    world model's filter and is exported and evaluated like every other pixel policy."""
    import torch

    pol = algo.impl.modules.policy
    return torch.nn.Sequential(copy.deepcopy(pol._encoder._layers), copy.deepcopy(pol._mu)).eval()
