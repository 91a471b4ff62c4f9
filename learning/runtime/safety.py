"""The one safety limiter (docs/architecture.md, contract 3).

Shared by the ROS policy node and the sim evaluator, so the policy validated in simulation
is limited exactly as on the robot. The applied (limited) action is what a policy is told it
did (`prev_action`). Numpy only: it runs on the robot computer, without torch or MuJoCo.

Order of operations for every action:
  1. non-finite input (or non-finite end-effector position) -> the hold action, never NaN;
  2. clip to the action limits [low, high];
  3. rate limit: each channel moves at most `max_delta` from the previously applied action;
  4. workspace box (Cartesian delta actions): the position channels are shrunk so that
     `ee_position + position_scale * action` does not leave [workspace_low, workspace_high]
     (movement back towards the box is always allowed);
  5. clip to [low, high] again (float safety).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np


@dataclass
class LimiterStats:
    """How often each limit acted since construction (for diagnostics)."""

    actions: int = 0
    invalid: int = 0  # non-finite input replaced by the hold action
    clipped: int = 0
    rate_limited: int = 0
    workspace_limited: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _vector(name: str, value: Sequence[float] | np.ndarray | float, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must have {n} entries, got shape {arr.shape}")
    return arr


@dataclass
class SafetyLimiter:
    """Clip, rate-limit and workspace-limit actions; hold on invalid input.

    low, high:        action limits (robot units), one per action channel.
    max_delta:        optional largest change per control step (scalar or per channel;
                      inf = unlimited for that channel).
    workspace_low/high: optional Cartesian box for the end effector (needs position_channels
                      and position_scale: metres moved per action unit per control step).
    hold_action:      what to apply when the input is invalid (zeros by default: the right
                      hold for delta and velocity interfaces).
    """

    low: Sequence[float] | np.ndarray
    high: Sequence[float] | np.ndarray
    max_delta: Sequence[float] | np.ndarray | float | None = None
    workspace_low: Sequence[float] | np.ndarray | None = None
    workspace_high: Sequence[float] | np.ndarray | None = None
    position_channels: tuple[int, ...] = (0, 1, 2)
    position_scale: float = 1.0
    hold_action: Sequence[float] | np.ndarray | None = None
    stats: LimiterStats = field(default_factory=LimiterStats)

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        n = self.low.size
        self.high = _vector("high", self.high, n)
        if n == 0 or not (np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high))):
            raise ValueError("action limits must be finite and non-empty")
        if np.any(self.low >= self.high):
            raise ValueError(f"every action low must be below its high: {self.low} vs {self.high}")
        if self.max_delta is not None:
            self.max_delta = _vector("max_delta", self.max_delta, n)
            if np.any(~(self.max_delta > 0)):
                raise ValueError("max_delta must be positive (use inf for no limit)")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError("give both workspace_low and workspace_high, or neither")
        self.position_channels = tuple(int(c) for c in self.position_channels)
        if self.workspace_low is not None:
            k = len(self.position_channels)
            if k == 0 or any(not 0 <= c < n for c in self.position_channels):
                raise ValueError(f"position_channels {self.position_channels} out of range")
            assert self.workspace_high is not None  # both or neither, checked above
            self.workspace_low = _vector("workspace_low", self.workspace_low, k)
            self.workspace_high = _vector("workspace_high", self.workspace_high, k)
            if np.any(self.workspace_low >= self.workspace_high):
                raise ValueError("every workspace_low must be below its workspace_high")
            if not self.position_scale > 0:
                raise ValueError("position_scale must be positive")
        hold = np.zeros(n) if self.hold_action is None else self.hold_action
        self.hold_action = _vector("hold_action", hold, n)
        if np.any(self.hold_action < self.low) or np.any(self.hold_action > self.high):
            raise ValueError(f"hold action {self.hold_action} is outside the action limits")
        self._prev: np.ndarray = self.hold_action.copy()

    @property
    def action_dim(self) -> int:
        return int(cast(np.ndarray, self.low).size)

    @property
    def needs_ee_position(self) -> bool:
        return self.workspace_low is not None

    @property
    def previous_action(self) -> np.ndarray:
        return self._prev.astype(np.float32)

    def reset(self, previous_action: Sequence[float] | np.ndarray | None = None) -> None:
        """Start of an episode: the rate limit starts from `previous_action` (default hold)."""
        hold_action = cast(np.ndarray, self.hold_action)  # an array since __post_init__
        if previous_action is None:
            self._prev = hold_action.copy()
        else:
            prev = _vector("previous_action", previous_action, self.action_dim)
            self._prev = np.clip(prev, self.low, self.high) if np.all(np.isfinite(prev)) \
                else hold_action.copy()

    def hold(self) -> np.ndarray:
        """The hold action, recorded as the previously applied action."""
        hold_action = cast(np.ndarray, self.hold_action)  # an array since __post_init__
        self._prev = hold_action.copy()
        return hold_action.astype(np.float32)

    def toward(self, target: Sequence[float] | np.ndarray) -> np.ndarray:
        """A commanded target (a position interface's hold) through the limits and the rate
        limit from the previously applied action, recorded as applied. A non-finite target
        repeats the previous action: a hold never moves towards a corrupt value."""
        t = np.asarray(target, dtype=np.float64).reshape(-1)
        if t.size != self.action_dim:
            raise ValueError(f"target has {t.size} channels, the limiter expects {self.action_dim}")
        if not np.all(np.isfinite(t)):
            return self._prev.astype(np.float32)
        out = np.clip(t, self.low, self.high)
        if self.max_delta is not None:
            out = np.clip(out, self._prev - self.max_delta, self._prev + self.max_delta)
        self._prev = out
        return out.astype(np.float32)

    def __call__(self, action, ee_position=None) -> np.ndarray:
        return self.limit(action, ee_position)

    def limit(
        self, action: Sequence[float] | np.ndarray, ee_position: Sequence[float] | np.ndarray | None = None
    ) -> np.ndarray:
        """The policy's action -> the action to apply (float32, always finite)."""
        self.stats.actions += 1
        try:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            a = np.full(self.action_dim, np.nan)
        if a.size != self.action_dim:
            raise ValueError(f"action has {a.size} channels, the limiter expects {self.action_dim}")
        ee = None
        if self.needs_ee_position:
            if ee_position is None:
                raise ValueError("this limiter has a workspace box: pass the end-effector position")
            ee = np.asarray(ee_position, dtype=np.float64).reshape(-1)
            if ee.size != len(self.position_channels):
                raise ValueError(
                    f"end-effector position has {ee.size} entries, expected {len(self.position_channels)}"
                )
        if not np.all(np.isfinite(a)) or (ee is not None and not np.all(np.isfinite(ee))):
            self.stats.invalid += 1
            return self.hold()

        out = np.clip(a, self.low, self.high)
        if np.any(out != a):
            self.stats.clipped += 1
        if self.max_delta is not None:
            limited = np.clip(out, self._prev - self.max_delta, self._prev + self.max_delta)
            if np.any(limited != out):
                self.stats.rate_limited += 1
            out = limited
        if ee is not None:
            idx = list(self.position_channels)
            # The largest steps that keep the end effector in the box; never forced inwards
            # harder than the policy asked, never pushed further out when already outside.
            ws_low = cast(np.ndarray, self.workspace_low)  # arrays since __post_init__
            ws_high = cast(np.ndarray, self.workspace_high)
            up = np.maximum((ws_high - ee) / self.position_scale, 0.0)
            down = np.minimum((ws_low - ee) / self.position_scale, 0.0)
            boxed = np.clip(out[idx], down, up)
            if np.any(boxed != out[idx]):
                self.stats.workspace_limited += 1
            out[idx] = boxed
        out = np.clip(out, self.low, self.high)
        self._prev = out
        return out.astype(np.float32)
