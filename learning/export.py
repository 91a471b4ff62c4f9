"""Export a recurrent latent policy to a single ONNX file (contract 2).

The exported graph is one filter step plus the actor mean (docs/architecture.md, contract 2):

    step(image_u8, prev_action, h, z[, state]) -> (action, h_next, z_next)

with a dynamic batch axis, a fixed opset, weights inside the file (no `.onnx.data`), the
actions scaled and clipped to the robot's limits inside the graph, and the spec JSON in
`metadata_props["vmerpo.spec"]`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from learning.runtime.spec import OUTPUT_NAMES, SPEC_KEY, PolicySpec

if TYPE_CHECKING:
    from perception.world_model import WorldModel

OPSET = 20


def scale_to_limits(unit: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [low, high], clipped (so rounding never leaves the limits)."""
    action = low + (unit + 1.0) * 0.5 * (high - low)
    return torch.minimum(torch.maximum(action, low), high)


def export_policy(module: nn.Module, spec: PolicySpec, path: str | os.PathLike,
                  overwrite: bool = False) -> Path:
    """Write `module` (forward(image, prev_action, h, z[, state]) -> (action, h_next, z_next))
    to `path` with the spec in its metadata. Returns the path."""
    import onnx

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    B = 2  # traced with batch 2; the batch axis is dynamic
    example = [
        torch.zeros(B, spec.image_size, spec.image_size, 3, dtype=torch.uint8),
        torch.zeros(B, spec.action_dim),
        torch.zeros(B, spec.deter_size),
        torch.zeros(B, spec.stoch_size),
    ]
    if spec.uses_state:
        example.append(torch.zeros(B, len(spec.state_names)))
    batch = torch.export.Dim("batch")
    dynamic = {name: {0: batch} for name in spec.input_names}
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, tuple(example), str(tmp), input_names=list(spec.input_names),
            output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic, opset_version=OPSET,
            external_data=False, dynamo=True, verbose=False,
        )
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    model.producer_name = "vmerpo"
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp), save_as_external_data=False)
    os.replace(tmp, path)
    for leftover in (Path(str(tmp) + ".data"),):
        leftover.unlink(missing_ok=True)
    return path


class TinyRecurrentPolicy(nn.Module):
    """A small randomly initialised policy with the deployed structure (conv encoder, GRU
    filter, posterior mean, tanh actor scaled to the limits).

    Used by tests and latency benchmarks of the deployment path (runtime, nodes) where a
    trained run would cost minutes; trained runs export the same graph shape.
    """

    def __init__(self, spec: PolicySpec, embed: int = 64, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        A, D, Z = spec.action_dim, spec.deter_size, spec.stoch_size
        S = len(spec.state_names) if spec.uses_state else 0
        self.uses_state = spec.uses_state
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 8, 4, 2), nn.ReLU(), nn.Conv2d(8, 16, 4, 2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * 16, embed), nn.ELU(),
        )
        self.img_in = nn.Linear(Z + A, hidden)
        self.gru = nn.GRUCell(hidden, D)
        self.post = nn.Linear(D + embed + S, 2 * Z)
        self.actor = nn.Sequential(nn.Linear(Z + D, hidden), nn.ELU(), nn.Linear(hidden, A))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(p.shape[-1], 1) ** 0.5))
        self.register_buffer("low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(spec.action_high, dtype=torch.float32))

    def forward(self, image, prev_action, h, z, state=None):
        x = image.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        embed = self.encoder(x)
        if self.uses_state:
            embed = torch.cat([embed, state], -1)
        h_next = self.gru(nn.functional.elu(self.img_in(torch.cat([z, prev_action], -1))), h)
        z_next, _ = self.post(torch.cat([h_next, embed], -1)).chunk(2, -1)
        action = scale_to_limits(torch.tanh(self.actor(torch.cat([z_next, h_next], -1))), self.low, self.high)
        return action, h_next, z_next


def make_test_policy(path: str | os.PathLike, spec: PolicySpec, seed: int = 0,
                     overwrite: bool = True) -> tuple[Path, TinyRecurrentPolicy]:
    module = TinyRecurrentPolicy(spec, seed=seed)
    return export_policy(module, spec, path, overwrite=overwrite), module


class DeployedPolicy(nn.Module):
    """The graph that runs on the robot: the world model's deterministic filter step
    (posterior mean) followed by the actor's mean action, squashed and scaled to the limits.

    `actor_mean` maps features s = [z, h] to the pre-tanh mean action [B, A].
    """

    def __init__(self, world_model: WorldModel, actor_mean: nn.Module) -> None:
        super().__init__()
        self.world_model = world_model
        self.actor_mean = actor_mean
        self.uses_state = bool(world_model.cfg.state_dim)

    def forward(self, image, prev_action, h, z, state=None):
        wm = self.world_model
        h_next, z_next = wm.step(image, prev_action, h, z, state if self.uses_state else None)
        unit = torch.tanh(self.actor_mean(torch.cat([z_next, h_next], -1)))
        return scale_to_limits(unit, wm.action_low, wm.action_high), h_next, z_next

