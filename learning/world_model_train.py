"""Training of the latent world model and MerPO meta-model (docs/algorithms.md).

`train(store_path, cfg, run_dir, resume)` is what `vmerpo train-model` runs. One loop serves
both forms: with one training task (or `meta=False`) every window trains slot 0; with several
tasks each window trains its task's heads theta_n and the proximal term
eta * ||theta_n - phi||^2 ties them to phi (slot 0), jointly with the shared encoder, decoder,
GRU and posterior: the joint minimum of MerPO's objective in (phi, theta_n, shared).

Exact resume: the batch and the noise of step i are pure functions of (seed, i), so a run
killed after its checkpoint at step c and resumed from it repeats steps c+1.. exactly; the
checkpoint holds model, optimizer, step and config.

Run directory: config.json, checkpoints/last.pt, model.pt (final), tb/ (TensorBoard),
metrics.jsonl (one line per logged step), metrics.json (summary), images/*.png.

Under torchrun the model trains data-parallel (`learning/distributed.py`): the batch is drawn
as world_size x grad_accum shards, DDP averages the gradients, rank 0 alone writes the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learning import distributed
from learning.sampler import SequenceSampler
from learning.store import EpisodeStore
from perception.networks import float_to_image
from perception.world_model import WorldModel, WorldModelConfig, config_from_dict


@dataclass
class TrainConfig:
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    batch_size: int = 64  # LOMPO: 64 sequences
    seq_len: int = 50  # LOMPO: 50 steps
    steps: int = 25_000  # LOMPO
    lr: float = 6e-4  # LOMPO
    adam_eps: float = 1e-7  # LOMPO (TF Keras Adam default)
    grad_clip: float = 100.0  # LOMPO
    shift_pad: int = 4  # DrQ random shift, pad 4 at 84 px [ours]
    decode_fraction: float = 1.0  # LOMPO decodes every frame; CPU preset decodes a subset [ours]
    use_state: bool = False  # proprioception as model input [ours, docs/algorithms.md]
    meta: bool = True  # per-task heads theta_n when the store has several training tasks [MerPO]
    eta: float = 1e-3  # proximal weight; chosen by validation (vmerpo bench world-model) [ours]
    holdout_every: int = 10  # every 10th training episode is validation only [ours]
    split: str = "train"  # task split trained on; meta-test tasks stay unseen [MerPO]
    seed: int = 0
    log_every: int = 25  # steps between scalar logs
    image_every: int = 500  # steps between PNG grids (and validation loss)
    checkpoint_every: int = 250  # steps between checkpoints
    prefetch: int = 3  # batches read ahead by a background thread
    device: str = "auto"  # auto | cpu | cuda
    channels_last: bool = False  # CPU only; measured slower than NCHW at cpu-preset widths
    threads: int = 0  # torch CPU threads; 0 = torch's default
    grad_accum: int = 1  # micro-batches per step and process: the batch is drawn as processes x grad_accum shards [ours]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        model = config_from_dict(d.pop("model", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        return cls(model=model, **d)


RUNTIME_KEYS = ("device", "threads", "prefetch")


def preset(name: str) -> TrainConfig:
    """tiny: seconds, for tests. cpu: a useful model in < 30 min on 2 cores, sized by
    measurement (vmerpo bench world-model reports its frames/s). bench: cpu with a bootstrapped,
    action-reading prior ensemble with random prior functions. paper: LOMPO's sizes, for a GPU."""
    if name == "paper":
        return TrainConfig()
    if name == "cpu":
        return TrainConfig(
            # Measured on the 2-core machine (vmerpo bench world-model reports frames/s): 64 px with
            # half widths, 16x32 windows, a quarter of the frames decoded: ~1100-1250 frames/s,
            # 3000 steps in ~20-23 min on 1 thread. 2 threads ran 8x slower whenever another
            # process shared the cores, so 1 thread.
            model=WorldModelConfig(image_size=64, cnn_depth=16, deter=128, stoch=32, hidden=128,
                                   reward_hidden=128, reward_scale=10.0),
            batch_size=16, seq_len=32, steps=3000, decode_fraction=0.25, shift_pad=4,
            # proprioception in: the image then only has to carry the goal and the objects
            # (demo, held-out reach task 40: 0/10 before state input and the goal marker, 10/10 after)
            use_state=True,
            log_every=25, image_every=500, checkpoint_every=250, threads=1)
    if name == "bench":
        # cpu, with an ensemble built to disagree off the data (the world-model benchmark's uncertainty checks):
        # bootstrapped members (p = 0.5; on reach, heads refit on cached latents: Spearman(mean_dis,
        # member error) 0.15 -> 0.39), heads that read the action, and random prior functions of
        # scale 3 (scale from a 1 / 3 / 10 sweep with heads refit on cached latents; trained on push,
        # same seed, without -> with them: Spearman(log_prob, error) 0.36 -> 0.62, OOD-action AUROC
        # 0.50 -> 0.61; experiments/04-world-model-benchmark)
        cfg = preset("cpu")
        return dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, ensemble_bootstrap=0.5, prior_action=True, prior_random_scale=3.0))
    if name == "tiny":
        return TrainConfig(
            model=WorldModelConfig(image_size=32, cnn_depth=4, deter=32, stoch=8, hidden=32,
                                   reward_hidden=32, ensemble=3),
            batch_size=4, seq_len=8, steps=40, decode_fraction=0.5, shift_pad=2, log_every=5,
            image_every=20, checkpoint_every=10, holdout_every=0, prefetch=2, threads=1)
    raise ValueError(f"unknown preset {name!r}; expected tiny, cpu, bench, paper or a JSON/YAML file")


def load_config(spec: str) -> TrainConfig:
    """A preset name, or a JSON/YAML file: {"preset": "cpu", <overrides>, "model": {...}}."""
    if spec in ("tiny", "cpu", "bench", "paper"):
        return preset(spec)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: no such config file (or preset tiny|cpu|bench|paper)")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        d = yaml.safe_load(text) or {}
    else:
        d = json.loads(text)
    base = preset(d.pop("preset", "paper")).to_dict()
    base["model"].update(d.pop("model", {}))
    base.update(d)
    return TrainConfig.from_dict(base)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA device here (use --device auto or cpu)")
    return torch.device(name)


def step_seed(seed: int, step: int, shard: int | None = None) -> int:
    return distributed.shard_seed(seed, step, shard)


# -- data -------------------------------------------------------------------------------------
@dataclass
class Data:
    store: EpisodeStore
    sampler: SequenceSampler
    task_slots: dict[int, int]  # task id -> head slot
    train_episodes: list[int]
    val_episodes: list[int]
    member_mask: np.ndarray | None = None  # [store episodes, K] bootstrap masks, or None


def bootstrap_masks(n_episodes: int, ensemble: int, p: float, seed: int) -> np.ndarray | None:
    """Per-episode masks of the bootstrapped ensemble: member k trains on episode e with
    probability p, a pure function of (seed, e) (exact resume). p = 0: None (LOMPO's scheme)."""
    if p <= 0:
        return None
    rng = np.random.default_rng([seed, 0xB007])
    return rng.random((n_episodes, ensemble)) < p


def open_data(store_path: str, cfg: TrainConfig, episodes: list[int] | None = None) -> Data:
    store = EpisodeStore.open(store_path)
    tasks = store.spec.task_ids(cfg.split) or sorted(set(store.episode_task.tolist()))
    eps = [i for i in range(store.n_episodes) if int(store.episode_task[i]) in tasks]
    if episodes is not None:  # an explicit list overrides the split
        eps = [int(e) for e in episodes]
    val = [e for j, e in enumerate(eps) if cfg.holdout_every and j % cfg.holdout_every == cfg.holdout_every - 1]
    train = [e for e in eps if e not in set(val)]
    if not train:
        raise ValueError(f"{store_path}: no episodes of split {cfg.split!r} to train on")
    present = sorted(set(int(store.episode_task[e]) for e in train))
    slots = ({t: i + 1 for i, t in enumerate(present)} if cfg.meta and len(present) > 1
             else {t: 0 for t in present})
    keys = ["image", "action", "reward"] + (["state"] if cfg.use_state else [])
    sampler = SequenceSampler(store, cfg.seq_len, cfg.batch_size, keys, episodes=train, seed=cfg.seed)
    mask = bootstrap_masks(store.n_episodes, cfg.model.ensemble, cfg.model.ensemble_bootstrap, cfg.seed)
    return Data(store, sampler, slots, train, val, mask)


def resolve_model_config(cfg: TrainConfig, data: Data) -> TrainConfig:
    spec = data.store.spec
    m = dataclasses.replace(cfg.model, input_size=spec.image_size, action_dim=len(spec.action_names),
                            state_dim=len(spec.state_names) if cfg.use_state else 0,
                            n_slots=1 + max(data.task_slots.values()))
    if spec.image_size < m.image_size:
        m = dataclasses.replace(m, image_size=spec.image_size)
    return dataclasses.replace(cfg, model=m)


def set_data_statistics(model: WorldModel, store: EpisodeStore) -> None:
    spec = store.spec
    with torch.no_grad():
        model.action_low.copy_(torch.tensor(spec.action_low))
        model.action_high.copy_(torch.tensor(spec.action_high))
        if model.cfg.state_dim:
            s = store.read("state", 0, store.n_frames)
            model.state_mean.copy_(torch.from_numpy(s.mean(0)))
            model.state_std.copy_(torch.from_numpy(s.std(0) + 1e-3))


def to_torch(batch: dict[str, np.ndarray], device: torch.device, slots: dict[int, int],
             data: Data | None = None) -> dict[str, torch.Tensor]:
    out = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True)
           for k, v in batch.items() if k not in ("task", "start")}
    out["slot"] = torch.tensor([slots[int(t)] for t in batch["task"]], device=device)
    if data is not None and data.member_mask is not None:
        ep = np.searchsorted(data.store.episode_ends, batch["start"], side="right")
        out["member_mask"] = torch.from_numpy(data.member_mask[ep]).to(device)
    return out


def batch_stream(sampler: SequenceSampler, seed: int, start: int, stop: int, prefetch: int,
                 wait: list[float], shards: tuple[int, ...] = (0,), n_shards: int = 1
                 ) -> Iterator[list[dict[str, np.ndarray]]]:
    """Batches of steps start..stop-1, read ahead by one background thread; `wait` accumulates
    the seconds the consumer waited. Step i's batch is drawn with an rng seeded by (seed, i), or,
    split into `n_shards`, shard g with (seed, i, g); each item lists this process's `shards`."""

    def draw(i: int) -> list[dict[str, np.ndarray]]:
        if n_shards == 1:
            sampler.rng = np.random.default_rng([seed, i])
            return [sampler.sample()]
        out = []
        for g in shards:
            sampler.rng = np.random.default_rng([seed, i, g])
            out.append(sampler.sample(batch_size=sampler.batch_size // n_shards))
        return out

    q: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
    stop_flag = threading.Event()

    def work() -> None:
        try:
            for i in range(start, stop):
                item = draw(i)
                while not stop_flag.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop_flag.is_set():
                    return
        except BaseException as e:  # surfaced in the consumer
            q.put(e)

    thread = threading.Thread(target=work, daemon=True, name="wm-prefetch")
    thread.start()
    try:
        for _ in range(start, stop):
            t0 = time.perf_counter()
            item = q.get()
            wait[0] += time.perf_counter() - t0
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop_flag.set()
        thread.join(timeout=5)


# -- checkpoints ------------------------------------------------------------------------------
def save_checkpoint(path: Path, model: WorldModel, opt: torch.optim.Optimizer | None, step: int,
                    cfg: TrainConfig, task_slots: dict[int, int], extra: dict | None = None) -> None:
    """Atomic (temp file + rename): a kill during the write leaves the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"model": model.state_dict(), "step": step, "config": json.dumps(cfg.to_dict()),
            "task_slots": [[int(t), int(s)] for t, s in task_slots.items()]}
    if opt is not None:
        blob["optimizer"] = opt.state_dict()
    blob.update(extra or {})
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file + rename: a process killed while rewriting a run file leaves the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_world_model(path: str | os.PathLike, device: str = "cpu") -> tuple[WorldModel, dict[str, Any]]:
    """A run directory (its model.pt, else checkpoints/last.pt) or a checkpoint file ->
    (model in eval mode, {"config": TrainConfig, "task_slots": {task: slot}, "step": int})."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt" if (p / "model.pt").exists() else p / "checkpoints" / "last.pt"
    if not p.exists():
        raise FileNotFoundError(f"{path}: no world model (model.pt or checkpoints/last.pt)")
    blob = torch.load(p, map_location=device, weights_only=True)
    cfg = TrainConfig.from_dict(json.loads(blob["config"]))
    model = WorldModel(cfg.model).to(device)
    model.load_state_dict(blob["model"])
    model.eval()
    return model, {"config": cfg, "task_slots": {int(t): int(s) for t, s in blob["task_slots"]},
                   "step": int(blob["step"])}


# -- visual checks ----------------------------------------------------------------------------
@torch.no_grad()
def image_grids(model: WorldModel, batch: dict[str, torch.Tensor], out_dir: Path, step: int,
                n_frames: int = 16, context: int | None = None) -> None:
    """PNG grids: real vs posterior reconstruction, and real vs open-loop prediction (posterior
    on the first `context` frames, then the prior ensemble mean under the logged actions)."""
    from perception.tv import save_image_grid

    out_dir.mkdir(parents=True, exist_ok=True)
    L = min(batch["image"].shape[1], n_frames)
    img, act = batch["image"][:1, :L], batch["action"][:1, :L]
    state = batch.get("state")
    x = model.images_in(img.flatten(0, 1))
    st = state[:1, :L].flatten(0, 1) if (state is not None and model.cfg.state_dim) else None
    embed = model.encode(x, st).unflatten(0, (1, L))
    post = model.observe(embed, act)
    recon = model.decoder(torch.cat([post["z"], post["h"]], -1).flatten(0, 1)).float()
    c = context or max(1, L // 4)
    h, z = post["h"][:, c - 1], post["z"][:, c - 1]
    slot = torch.zeros(1, dtype=torch.long, device=h.device)
    preds = []
    for t in range(c, L):
        h = model.transition(h, z, act[:, t - 1])
        mu, _ = model.prior(h, slot, act[:, t - 1])
        z = mu.mean(1)
        preds.append(model.decoder(torch.cat([z, h], -1)).float())
    pred = torch.cat([x[:c], *preds]) if preds else x[:c]
    save_image_grid([float_to_image(x), float_to_image(recon)], str(out_dir / f"recon_{step:06d}.png"))
    save_image_grid([float_to_image(x), float_to_image(pred)], str(out_dir / f"openloop_{step:06d}.png"))


# -- the loop ---------------------------------------------------------------------------------
class StepLoss(torch.nn.Module):
    """One micro-batch's loss as a forward (DistributedDataParallel hooks forward): LOMPO's
    loss, plus MerPO's proximal term eta * ||theta_n - phi||^2 over the slots in the batch."""

    def __init__(self, model: WorldModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        out = self.model.losses(batch["image"], batch["action"], batch["reward"], batch["slot"], gen,
                                batch.get("state"), cfg.shift_pad, cfg.decode_fraction,
                                batch.get("member_mask"))
        if cfg.model.n_slots > 1:
            used = torch.unique(batch["slot"])
            prox = self.model.heads.proximal(used) / len(used)
            out["loss"] = out["loss"] + cfg.eta * prox
            out["proximal"] = prox.detach()
        return out


def train(store_path: str, cfg: TrainConfig, run_dir: str | os.PathLike, resume: bool = False,
          overwrite: bool = False, progress: bool = True, episodes: list[int] | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    run = Path(run_dir)
    ctx, _ = distributed.init(pick_device(cfg.device))  # no-op outside torchrun

    def prepare() -> None:
        if resume:
            if not (run / "config.json").exists():
                raise FileNotFoundError(f"{run}: nothing to resume (no config.json)")
            saved = json.loads((run / "config.json").read_text())
            requested = TrainConfig.from_dict(saved["requested"]).to_dict()
            # where it runs may change on resume; what it computes may not
            diff = [k for k, v in cfg.to_dict().items() if requested[k] != v and k not in RUNTIME_KEYS]
            if diff:
                raise ValueError(f"{run}: the config differs from the run's config.json in {diff}")
        elif run.exists() and any(run.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{run}: run directory exists (use --resume or --overwrite)")
            shutil.rmtree(run)

    distributed.on_main(prepare)  # rank 0 checks and clears; every rank raises its error
    if not ctx.is_main:
        progress, log = False, (lambda m: None)

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(store_path, cfg, run, resume, progress, episodes, log)
    finally:
        torch.set_num_threads(threads)


def _train(store_path: str, cfg: TrainConfig, run: Path, resume: bool, progress: bool,
           episodes: list[int] | None, log: Callable[[str], None]) -> dict[str, Any]:
    ckpt_path = run / "checkpoints" / "last.pt"
    requested = cfg
    if resume:
        saved = json.loads((run / "config.json").read_text())
        episodes = saved.get("episodes")
    ctx, device = distributed.init(pick_device(cfg.device))
    n_shards = ctx.world_size * cfg.grad_accum
    if cfg.batch_size % n_shards:
        raise ValueError(f"batch_size {cfg.batch_size} must split into {ctx.world_size} processes x "
                         f"grad_accum {cfg.grad_accum} equal shards")
    shards = tuple(ctx.rank * cfg.grad_accum + m for m in range(cfg.grad_accum))
    data = open_data(store_path, cfg, episodes)
    cfg = resolve_model_config(cfg, data)
    torch.manual_seed(cfg.seed)  # parameter init only; all training noise is per-step below
    model = WorldModel(cfg.model)
    set_data_statistics(model, data.store)
    model.to(device)
    if cfg.channels_last and device.type == "cpu":
        model.encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    step = 0
    if resume and ckpt_path.exists():
        blob = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        step = int(blob["step"])
        log(f"resuming {run} from step {step}")
    loss_fn: torch.nn.Module = StepLoss(model, cfg)
    if ctx.enabled:
        loss_fn = torch.nn.parallel.DistributedDataParallel(
            loss_fn, device_ids=[device.index] if device.type == "cuda" else None)
    if not ctx.is_main:
        return _follow(cfg, data, device, loss_fn, model, opt, step, shards, n_shards)
    run.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_text_atomic(run / "config.json", json.dumps({
            "requested": requested.to_dict(), "train": cfg.to_dict(), "store": str(store_path), "episodes": episodes,
            "task_slots": {str(t): s for t, s in data.task_slots.items()},
            "train_episodes": data.train_episodes, "val_episodes": data.val_episodes}, indent=1))
    metrics_path = run / "metrics.jsonl"
    if metrics_path.exists():  # drop lines past the checkpoint: they are recomputed
        lines = [ln for ln in metrics_path.read_text().splitlines() if ln.strip()]
        write_text_atomic(metrics_path, "".join(ln + "\n" for ln in lines if json.loads(ln)["step"] <= step))

    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(run / "tb"), purge_step=step if resume else None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    val_batch = None
    if data.val_episodes:
        vs = SequenceSampler(data.store, cfg.seq_len, cfg.batch_size, data.sampler.keys,
                             episodes=data.val_episodes, seed=cfg.seed + 1)
        val_batch = to_torch(vs.sample(), device, {t: data.task_slots.get(t, 0) for t in vs.tasks})

    wait = [0.0]
    totals: dict[str, float]
    t_start, step_start, totals = time.perf_counter(), step, {}
    stream = batch_stream(data.sampler, cfg.seed, step, cfg.steps, cfg.prefetch, wait, shards, n_shards)
    from tqdm import tqdm
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train-model", unit="step",
               dynamic_ncols=True)
    model.train()
    last: dict[str, float] = {}
    for micro in stream:
        step += 1
        batch, out, gnorm = _step(cfg, loss_fn, model, opt, micro, device, data.task_slots, step, shards,
                                  n_shards, autocast, data)
        loss = out.pop("loss")
        for k, v in out.items():
            if k != "loss":
                totals[k] = totals.get(k, 0.0) + float(v)
        totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
        totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(gnorm)
        totals["n"] = totals.get("n", 0) + 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = totals.pop("n")
            last = distributed.mean_over_ranks({k: v / n for k, v in totals.items()})
            elapsed = time.perf_counter() - t_start
            last["steps_per_s"] = (step - step_start) / elapsed
            last["frames_per_s"] = last["steps_per_s"] * cfg.batch_size * cfg.seq_len
            last["data_wait_share"] = wait[0] / elapsed
            for k, x in last.items():
                writer.add_scalar(f"train/{k}", x, step)
            with metrics_path.open("a") as f:
                f.write(json.dumps({"step": step, **last}) + "\n")
            bar.set_postfix(loss=f"{last['loss']:.1f}", img=f"{last['image_nll']:.1f}",
                            rew=f"{last['reward_nll']:.3f}", kl=f"{last['kl']:.2f}")
            totals = {}
        if step % cfg.image_every == 0 or step == cfg.steps:
            model.eval()
            with torch.no_grad(), autocast:
                image_grids(model, batch if val_batch is None else val_batch, run / "images", step)
                if val_batch is not None:
                    vg = torch.Generator().manual_seed(cfg.seed)
                    vo = model.losses(val_batch["image"], val_batch["action"], val_batch["reward"],
                                      val_batch["slot"], vg, val_batch.get("state"), 0, 1.0)
                    for k in ("loss", "image_nll", "reward_nll", "kl", "pooled_reward_nll"):
                        if k in vo:
                            writer.add_scalar(f"val/{k}", float(vo[k]), step)
            model.train()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            writer.flush()
            save_checkpoint(ckpt_path, model, opt, step, cfg, data.task_slots)
    bar.close()
    writer.close()
    save_checkpoint(run / "model.pt", model, None, step, cfg, data.task_slots)
    elapsed = time.perf_counter() - t_start
    summary = {"step": step, "steps_this_run": step - step_start, "seconds": elapsed,
               "steps_per_s": (step - step_start) / max(elapsed, 1e-9),
               "frames_per_s": (step - step_start) * cfg.batch_size * cfg.seq_len / max(elapsed, 1e-9),
               "data_wait_share": wait[0] / max(elapsed, 1e-9), "final": last,
               "n_slots": cfg.model.n_slots, "device": str(device)}
    (run / "metrics.json").write_text(json.dumps(summary, indent=1))
    distributed.barrier()  # the other ranks return once model.pt is there
    return summary


def _step(cfg: TrainConfig, loss_fn: torch.nn.Module, model: WorldModel, opt: torch.optim.Optimizer,
          micro: list[dict[str, np.ndarray]], device: torch.device, slots: dict[int, int], step: int,
          shards: tuple[int, ...], n_shards: int, autocast: Any, data: Data | None = None
          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """One optimizer step over this process's micro-batches (shards of the step's batch):
    gradients accumulate locally and DDP averages them over processes on the last one."""
    opt.zero_grad(set_to_none=True)
    outs = []
    for m, batch_np in enumerate(micro):
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, None if n_shards == 1 else shards[m]))
        batch = to_torch(batch_np, device, slots, data)
        last = m == len(micro) - 1
        no_sync = (loss_fn.no_sync()  # type: ignore[operator]  # DDP's, found by hasattr
                   if (not last and hasattr(loss_fn, "no_sync")) else nullcontext())
        with no_sync:
            with autocast:
                out = loss_fn(batch, gen)
            (out["loss"] if len(micro) == 1 else out["loss"] / len(micro)).backward()
        outs.append({k: v.detach() for k, v in out.items()})
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    mean = outs[0] if len(outs) == 1 else {k: torch.stack([o[k] for o in outs]).mean() for k in outs[0]}
    return batch, mean, gnorm


def _follow(cfg: TrainConfig, data: Data, device: torch.device, loss_fn: torch.nn.Module, model: WorldModel,
            opt: torch.optim.Optimizer, step: int, shards: tuple[int, ...], n_shards: int) -> dict[str, Any]:
    """A rank other than 0: the same steps on its own shards, nothing written."""
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    wait = [0.0]
    totals: dict[str, float] = {}
    model.train()
    for micro in batch_stream(data.sampler, cfg.seed, step, cfg.steps, cfg.prefetch, wait, shards, n_shards):
        step += 1
        _, out, gnorm = _step(cfg, loss_fn, model, opt, micro, device, data.task_slots, step, shards, n_shards,
                              autocast, data)
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(gnorm)
        totals["n"] = totals.get("n", 0) + 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = totals.pop("n")
            distributed.mean_over_ranks({k: v / n for k, v in totals.items()})  # rank 0 logs the mean
            totals = {}
    distributed.barrier()
    return {"step": step, "rank": distributed.current().rank}


def parameters_equal(a: WorldModel, b: WorldModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

