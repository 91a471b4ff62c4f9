"""The exported policy's spec (docs/architecture.md, contract 2), stored as JSON in the ONNX file's
`metadata_props["vmerpo.spec"]`. Torch-free: read by the policy runtime on the robot."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPEC_KEY = "vmerpo.spec"
SPEC_FORMAT = "vmerpo.policy"
SPEC_VERSION = 1
INPUT_NAMES = ("image", "prev_action", "h", "z")  # + "state" when uses_state
OUTPUT_NAMES = ("action", "h_next", "z_next")
ACTION_TYPES = ("ee_delta", "twist", "joint_position", "joint_velocity")
# Position interfaces hold the current position; delta/velocity interfaces hold zero.
POSITION_TYPES = ("joint_position",)


@dataclass
class PolicySpec:
    """Everything a caller must agree with before an exported policy may act."""

    image_size: int  # model image side; input image is uint8 [B, size, size, 3] RGB
    action_names: list[str]
    action_low: list[float]  # the graph's actions already lie inside [low, high]
    action_high: list[float]
    deter_size: int  # D: GRU state h
    stoch_size: int  # Z: stochastic state z (the posterior mean is carried)
    action_type: str = "ee_delta"
    action_units: str = ""
    action_frame: str = "world"
    gripper_channel: int | None = None
    hold_action: list[float] | str | None = None  # list, or "current position"
    state_names: list[str] = field(default_factory=list)
    uses_state: bool = False  # True: the graph takes a `state` input [B, len(state_names)]
    image_encoding: str = "rgb8"
    crop: str = "center"
    camera: dict[str, Any] = field(default_factory=dict)
    control_hz: float = 0.0
    run_id: str = ""
    data_hash: str = ""
    env: dict[str, Any] = field(default_factory=dict)  # family / task the policy was trained for
    vmerpo_version: str = ""
    format: str = SPEC_FORMAT
    format_version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        n = len(self.action_names)
        if len(self.action_low) != n or len(self.action_high) != n:
            raise ValueError(f"policy spec: {n} action names but {len(self.action_low)}/"
                             f"{len(self.action_high)} limits")
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
            raise ValueError("policy spec: every action_low must be below its action_high")
        if self.action_type not in ACTION_TYPES:
            raise ValueError(f"policy spec: action_type {self.action_type!r} not one of {ACTION_TYPES}")
        if self.uses_state and not self.state_names:
            raise ValueError("policy spec: uses_state needs state_names")

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES + (("state",) if self.uses_state else ())

    def hold(self, current_position: list[float] | None = None) -> list[float]:
        """The action that keeps the robot where it is."""
        if self.hold_action == "current position" or self.action_type in POSITION_TYPES:
            if current_position is None:
                raise ValueError("the hold action of a position interface needs the current position")
            return [float(x) for x in current_position]
        if isinstance(self.hold_action, list):
            return [float(x) for x in self.hold_action]
        return [0.0] * self.action_dim

    def check_observation(self, image: Any, state: Any = None) -> None:
        """Raise ValueError unless (image, state) is what the policy takes: uint8
        [size, size, 3] and, when the policy uses proprioception, a finite state vector."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError(f"image must be a uint8 array, got {getattr(image, 'dtype', type(image).__name__)}")
        if image.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"image has shape {image.shape}, the policy expects "
                             f"{(self.image_size, self.image_size, 3)} (use perception.preprocess.to_model_image)")
        if self.uses_state:
            if state is None:
                raise ValueError(f"the policy needs a state of {len(self.state_names)} values ({self.state_names})")
            state = np.asarray(state)
            if state.shape != (len(self.state_names),):
                raise ValueError(f"state has shape {state.shape}, the policy expects ({len(self.state_names)},)")
            if not np.all(np.isfinite(state)):
                raise ValueError("state has a non-finite value (NaN or inf)")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PolicySpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"policy spec is not valid JSON ({e})") from None
        if data.get("format") != SPEC_FORMAT:
            raise ValueError(f"policy spec format is {data.get('format')!r}, expected {SPEC_FORMAT!r}")
        if int(data.get("format_version", 0)) > SPEC_VERSION:
            raise ValueError(f"policy spec version {data.get('format_version')} is newer than this "
                             f"vmerpo understands ({SPEC_VERSION}); upgrade vmerpo")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as e:
            raise ValueError(f"policy spec is incomplete ({e})") from None

    def mismatches(self, **expected: Any) -> list[str]:
        """Differences against a robot/env configuration; keys are spec field names plus
        `action_dim`. A value of None means "no opinion"."""
        out = []
        for key, want in expected.items():
            if want is None:
                continue
            have = self.action_dim if key == "action_dim" else getattr(self, key, None)
            if isinstance(have, (list, tuple)) and isinstance(want, (list, tuple)):
                same = len(have) == len(want) and all(
                    abs(float(a) - float(b)) <= 1e-6 if isinstance(a, (int, float)) else a == b
                    for a, b in zip(have, want, strict=True))
            else:
                same = have == want
            if not same:
                out.append(f"{key}: policy has {have!r}, configuration has {want!r}")
        return out
