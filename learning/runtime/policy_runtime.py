"""`PolicyRuntime`: an exported vmerpo policy run by onnxruntime (contract 2).

The one class used by sim evaluation and by the ROS policy node, so the policy validated in
sim is byte for byte the one that drives the robot. It owns the recurrent latent state:

    rt = PolicyRuntime("policy.onnx")
    rt.check_compatible(image_size=64, action_names=[...])   # refuse a policy for another robot
    rt.reset()                                              # new episode: h, z, prev_action = 0
    a = rt.act(image_u8, state)                             # one action per camera frame
    rt.set_applied_action(limiter(a))                       # what the robot really did

Torch-free: numpy + onnxruntime only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learning.runtime.spec import OUTPUT_NAMES, SPEC_KEY, PolicySpec


def choose_providers(request: str | Sequence[str] | None = None) -> list[str]:
    """Execution providers: "auto"/None -> CUDA when onnxruntime-gpu sees a GPU, else CPU;
    "cpu" or "cuda" explicitly; or a list of onnxruntime provider names."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if request is None or request == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if request == "cpu":
        return ["CPUExecutionProvider"]
    if request == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ValueError("CUDA execution provider requested but onnxruntime has none "
                             f"(available: {available}); install onnxruntime-gpu or use --providers cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if isinstance(request, str):
        raise ValueError(f"unknown provider request {request!r}: use auto, cpu, cuda or a list")
    missing = [p for p in request if p not in available]
    if missing:
        raise ValueError(f"onnxruntime lacks provider(s) {missing}; available: {available}")
    return list(request)


def read_spec(path: str | os.PathLike) -> PolicySpec:
    """The spec of an exported policy file, without creating an inference session."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy file {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ValueError(f"{path} is not a readable ONNX model ({type(e).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if SPEC_KEY not in props:
        raise ValueError(f"{path} has no {SPEC_KEY} metadata: not a policy exported by `vmerpo export`")
    return PolicySpec.from_json(props[SPEC_KEY])


class InferenceError(RuntimeError):
    """The model failed on a valid observation: an onnxruntime error (numerical fault, provider
    or device failure) or a non-finite output. The cause is chained; nothing was advanced."""


class PolicyRuntime:
    """A recurrent latent policy in onnxruntime, with its spec and its own latent state."""

    def __init__(
        self,
        path: str | os.PathLike,
        providers: str | Sequence[str] | None = "auto",
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"policy file {self.path} not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = int(inter_op_threads)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=choose_providers(providers))
        except ValueError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ValueError(f"{self.path} is not a valid ONNX model ({first})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in props:
            raise ValueError(f"{self.path} has no {SPEC_KEY} metadata: not a policy exported by `vmerpo export`")
        self.spec = PolicySpec.from_json(props[SPEC_KEY])
        self._check_graph()
        self.providers = self.session.get_providers()
        s = self.spec
        self._low = np.asarray(s.action_low, np.float32)
        self._high = np.asarray(s.action_high, np.float32)
        self._feeds: dict[str, np.ndarray] = {
            "image": np.zeros((1, s.image_size, s.image_size, 3), np.uint8),
            "prev_action": np.zeros((1, s.action_dim), np.float32),
            "h": np.zeros((1, s.deter_size), np.float32),
            "z": np.zeros((1, s.stoch_size), np.float32),
        }
        if s.uses_state:
            self._feeds["state"] = np.zeros((1, len(s.state_names)), np.float32)
        self.steps = 0

    def _check_graph(self) -> None:
        s = self.spec
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if set(inputs) != set(s.input_names):
            raise ValueError(f"{self.path}: graph inputs {sorted(inputs)} do not match the contract "
                             f"{list(s.input_names)}")
        if outputs[: len(OUTPUT_NAMES)] != list(OUTPUT_NAMES):
            raise ValueError(f"{self.path}: graph outputs {outputs} do not match the contract {list(OUTPUT_NAMES)}")
        expected = {"image": [s.image_size, s.image_size, 3], "prev_action": [s.action_dim],
                    "h": [s.deter_size], "z": [s.stoch_size]}
        if s.uses_state:
            expected["state"] = [len(s.state_names)]
        for name, tail in expected.items():
            got = list(inputs[name].shape[1:])
            if got != tail:
                raise ValueError(f"{self.path}: input {name} has shape [B, {got}] but the spec says [B, {tail}]")

    # -- the caller's configuration ---------------------------------------------------------
    def check_compatible(self, **expected: Any) -> None:
        """Raise ValueError listing every difference between the policy's spec and the
        robot/env configuration (image_size, action_names, action_dim, action_type,
        state_names, action_low/high, control_hz, ...; None = don't care)."""
        diff = self.spec.mismatches(**expected)
        if diff:
            raise ValueError(f"policy {self.path.name} does not match this configuration: " + "; ".join(diff))

    # -- the episode ------------------------------------------------------------------------
    def reset(self) -> None:
        """New episode: zero latent state and previous action."""
        for key in ("prev_action", "h", "z"):
            self._feeds[key].fill(0.0)
        self.steps = 0

    def validate_observation(self, image: np.ndarray, state: np.ndarray | None = None) -> None:
        self.spec.check_observation(image, state)

    def act(self, image: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        """One filter step and the policy's action for this camera frame (robot units,
        inside the spec's limits). Invalid observations raise ValueError, model failures
        InferenceError; either way nothing changes."""
        self.validate_observation(image, state)
        feeds = self._feeds
        feeds["image"][0] = image
        if self.spec.uses_state:
            feeds["state"][0] = state
        try:
            action, h_next, z_next = self.session.run(list(OUTPUT_NAMES), feeds)[:3]
        except Exception as e:  # onnxruntime's own exception types (Fail, RuntimeException, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise InferenceError(f"onnxruntime failed on this frame ({type(e).__name__}: {first[:300]}); "
                                 "the latent state was not advanced") from e
        if not (np.all(np.isfinite(action)) and np.all(np.isfinite(h_next)) and np.all(np.isfinite(z_next))):
            raise InferenceError("the policy produced a non-finite output; the latent state was not advanced")
        feeds["h"][...] = h_next
        feeds["z"][...] = z_next
        out = np.clip(action[0], self._low, self._high).astype(np.float32)
        feeds["prev_action"][0] = out  # until the caller reports what was really applied
        self.steps += 1
        return out

    def set_applied_action(self, applied: np.ndarray) -> None:
        """The action actually applied after safety limiting: the next step's prev_action."""
        applied = np.asarray(applied, np.float32).reshape(-1)
        if applied.shape != (self.spec.action_dim,):
            raise ValueError(f"applied action has {applied.size} values, the policy has {self.spec.action_dim}")
        if not np.all(np.isfinite(applied)):
            raise ValueError("applied action has a non-finite value")
        self._feeds["prev_action"][0] = applied

    @property
    def latent_state(self) -> dict[str, np.ndarray]:
        return {k: self._feeds[k][0].copy() for k in ("h", "z", "prev_action")}
