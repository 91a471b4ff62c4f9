"""The one alignment rule (contract 1) for recording, importing and deploying.

`recorder_node` (topics -> store), `vmerpo import-bag` (rosbag2 -> store) and `policy_node`
(camera -> command) pair camera frames with joint states and commands through these
functions only, so a row of a store holds what the deployed policy would have seen:

- **A tick per camera frame**, thinned to `control_hz` by the frames' times (`is_tick`).
- **A message's time is its header stamp.** Only a message without one (stamp 0) takes its
  log time instead: the bag's log time when importing, the receive time on the node's clock
  when recording or deploying (`message_time`); the callers count those rows and say so.
- **State**: the newest joint state whose time is at or before the frame's
  (`newest_at_or_before`; equal times: the one received last). A frame with no joint state at
  or before it has no state: it is not a row, and the policy holds. Times are compared within
  one timeline: a stamp more than 1 s behind the newest starts a new one (a simulator's clock
  reset; `clock_segments`, `StampedHistory`).
- **Action**: the first command that answers the frame (`answers`, `first_answers`). A
  command that names a frame (`frame_stamp_ns=` in a Float64MultiArray's layout label, as
  policy_node writes) answers exactly that frame; one that names none answers every frame
  received (logged) before it. Commands carry no capture time, so this side compares receive
  (log) times: a command logged before the frame cannot answer it.

Torch-free and rclpy-free (numpy only): the nodes and the bag importer import it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import numpy as np

CLOCK_BACK_NS = 1_000_000_000  # a stamp this far behind the newest: the clock went back (a reset)


def clock_segments(times: Sequence[int] | np.ndarray, back_ns: int = CLOCK_BACK_NS) -> list[int]:
    """For message times in receive (log) order, the timeline of each, counting from 0: a new
    one starts where a time falls more than `back_ns` behind the newest of the current one (a
    simulator reset, a bag played in a loop). Stamps of two timelines are not comparable: the
    old one's must not pass for the new one's (`StampedHistory` forgets them; import-bag pairs
    within a timeline and starts an episode at the camera's reset)."""
    out: list[int] = []
    seg, newest = 0, None
    for t in times:
        t = int(t)
        if newest is not None and t < newest - back_ns:
            seg, newest = seg + 1, t
        else:
            newest = t if newest is None else max(newest, t)
        out.append(seg)
    return out


def message_time(stamp_ns: int, log_ns: int) -> tuple[int, bool]:
    """(time, used_log_time): the header stamp, or `log_ns` when the message has none (0)."""
    stamp_ns = int(stamp_ns)
    return (stamp_ns, False) if stamp_ns > 0 else (int(log_ns), True)


def is_tick(t: int, last_tick: int | None, control_hz: float) -> bool:
    """Whether a frame at `t` is a tick: every frame when `control_hz` is 0, else frames at
    least 0.75 / control_hz after the last tick (25 % tolerance for camera jitter)."""
    if not control_hz or last_tick is None:
        return True
    return t - last_tick >= 0.75e9 / float(control_hz)


def _check_sorted(stamps: Sequence[int] | np.ndarray, what: str) -> None:
    a = np.asarray(stamps)
    if a.size > 1 and np.any(a[1:] < a[:-1]):
        i = int(np.argmax(a[1:] < a[:-1]))
        raise ValueError(f"{what} are not in ascending order (entry {i + 1}: {int(a[i + 1])} < {int(a[i])}); "
                         "sort them first (a stable sort keeps the receive order of equal times)")


def newest_at_or_before(stamps: Sequence[int], t: int, *, check: bool = True) -> int | None:
    """Index of the newest entry of `stamps` at or before `t`: the joint state of a frame at
    `t`. `stamps` must be ascending (ValueError otherwise; `check=False` skips the O(n) check
    for a caller that keeps them sorted, such as `StampedHistory`); of equal stamps the last
    one (the one received last) is taken. None when every stamp is after `t` or there is none."""
    if check:
        _check_sorted(stamps, "stamps")
    i = bisect_right(stamps, t) - 1
    return i if i >= 0 else None


def newest_at_or_before_each(stamps: Sequence[int] | np.ndarray, times: Sequence[int] | np.ndarray) -> np.ndarray:
    """`newest_at_or_before` for many times at once (int64 indices, -1 where there is none)."""
    s = np.asarray(stamps, dtype=np.int64)
    _check_sorted(s, "stamps")
    return np.searchsorted(s, np.asarray(times, dtype=np.int64), side="right").astype(np.int64) - 1


def answers(frame_stamp: int, frame_time: float, command_frame: int | None, command_time: float) -> bool:
    """Whether a command answers a frame. `frame_stamp`: the frame's header stamp (what a
    command names); `frame_time` and `command_time`: when each was received (logged).
    A command naming a frame (non-zero `command_frame`) answers exactly that frame; one
    naming none answers a frame received before it. A frame's action is the first command
    that answers it."""
    if command_frame:
        return int(command_frame) == int(frame_stamp)
    return command_time > frame_time


def first_answers(frame_stamps: Sequence[int] | np.ndarray, frame_times: Sequence[int] | np.ndarray,
                  command_frames: Sequence[int | None], command_times: Sequence[int] | np.ndarray,
                  deadlines: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """For each frame, the index of the first command (in receive order, `command_times`
    ascending) that `answers` it, or -1. A command naming no frame counts only up to the
    frame's deadline (receive time), if given: an episode's end, so a command logged after
    the robot stopped does not answer its last frame. A command naming a frame answers it
    wherever it was logged (the frame is named; only a live recorder cannot wait for it)."""
    times = np.asarray(command_times, dtype=np.int64)
    _check_sorted(times, "command times")
    named: dict[int, int] = {}
    unnamed_idx: list[int] = []
    for k, f in enumerate(command_frames):
        if f:
            named.setdefault(int(f), k)  # the first command naming the frame
        else:
            unnamed_idx.append(k)
    u_idx = np.asarray(unnamed_idx, dtype=np.int64)
    u_times = times[u_idx] if len(u_idx) else np.zeros(0, np.int64)
    ft = np.asarray(frame_times, dtype=np.int64)
    pos = np.searchsorted(u_times, ft, side="right")  # first unnamed command strictly after
    out = np.full(len(ft), -1, dtype=np.int64)
    for i, (stamp, p) in enumerate(zip(np.asarray(frame_stamps, dtype=np.int64), pos, strict=True)):
        best = -1
        if p < len(u_idx) and (deadlines is None or u_times[p] <= int(deadlines[i])):
            best = int(u_idx[p])
        hit = named.get(int(stamp)) if stamp else None
        if hit is not None and (best < 0 or hit < best):
            best = hit
        out[i] = best
    return out


class StampedHistory:
    """The newest `maxlen` messages kept in time order (a message that arrives out of order
    is inserted at its place; of equal times the one received last comes last), for
    `newest_at_or_before` lookups of a node's joint states. `h[i]` is `(time, item)`.

    A message stamped more than `max_back_ns` before the newest kept one means the clock went
    back (a simulator reset, a bag played in a loop): what is kept belongs to the old timeline,
    whose stamps would otherwise pass for the new one's (a take's frame paired with the
    previous take's joint state), so it is dropped (`clock_resets` counts these)."""

    def __init__(self, maxlen: int = 2048, max_back_ns: int = CLOCK_BACK_NS) -> None:
        self.maxlen = int(maxlen)
        self.max_back_ns = int(max_back_ns)
        self.clock_resets = 0
        self._stamps: list[int] = []
        self._items: list[Any] = []

    def add(self, t: int, item: Any) -> None:
        t = int(t)
        if self._stamps and t < self._stamps[-1] - self.max_back_ns:
            self.clear()
            self.clock_resets += 1
        if not self._stamps or t >= self._stamps[-1]:
            self._stamps.append(t)
            self._items.append(item)
        else:
            i = bisect_right(self._stamps, t)
            self._stamps.insert(i, t)
            self._items.insert(i, item)
        if len(self._stamps) > self.maxlen:  # the oldest times go first
            del self._stamps[0], self._items[0]

    def at_or_before(self, t: int) -> Any | None:
        """The item of the newest time at or before `t`, or None."""
        i = newest_at_or_before(self._stamps, t, check=False)
        return None if i is None else self._items[i]

    def clear(self) -> None:
        self._stamps.clear()
        self._items.clear()

    def __len__(self) -> int:
        return len(self._stamps)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return self._stamps[i], self._items[i]
