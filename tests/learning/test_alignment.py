"""The one alignment rule (learning/alignment.py) that recorder_node, import-bag and
policy_node share: state = newest joint state at or before the frame, action = the first
command that answers it, a tick per camera frame, log time only without a header stamp."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from learning.alignment import (
    StampedHistory,
    answers,
    clock_segments,
    first_answers,
    is_tick,
    message_time,
    newest_at_or_before,
    newest_at_or_before_each,
)

ROOT = Path(__file__).resolve().parents[2]


def test_newest_at_or_before_takes_equal_stamps_and_the_last_of_ties():
    stamps = [10, 20, 20, 30]
    assert newest_at_or_before(stamps, 25) == 2  # the newest before: 20 (the one received last)
    assert newest_at_or_before(stamps, 20) == 2  # at: an equal stamp counts, the last of the ties
    assert newest_at_or_before(stamps, 10) == 0
    assert newest_at_or_before(stamps, 99) == 3


def test_no_state_before_the_frame_is_none_not_the_nearest():
    assert newest_at_or_before([10, 20], 9) is None
    assert newest_at_or_before([], 5) is None
    assert list(newest_at_or_before_each([10, 20], [9, 10, 15, 25])) == [-1, 0, 0, 1]
    assert list(newest_at_or_before_each([], [1, 2])) == [-1, -1]


def test_unsorted_stamps_are_refused_naming_the_entry():
    with pytest.raises(ValueError, match=r"not in ascending order \(entry 2: 15 < 20\)"):
        newest_at_or_before([10, 20, 15], 30)
    with pytest.raises(ValueError, match="not in ascending order"):
        newest_at_or_before_each(np.array([3, 1]), [2])
    with pytest.raises(ValueError, match="command times are not in ascending order"):
        first_answers([1], [1], [None, None], [5, 4])


def test_vectorised_equals_scalar_on_random_stamps():
    rng = np.random.default_rng(0)
    stamps = np.sort(rng.integers(0, 1000, 200))  # with ties
    times = rng.integers(-10, 1010, 500)
    many = newest_at_or_before_each(stamps, times)
    one = [newest_at_or_before(list(stamps), int(t)) for t in times]
    assert [(-1 if i is None else i) for i in one] == list(many)
    for t, i in zip(times, many, strict=True):  # the definition, directly
        before = np.flatnonzero(stamps <= t)
        assert i == (before[-1] if len(before) else -1)


def test_message_time_uses_the_log_time_only_without_a_header_stamp():
    assert message_time(1_000, 2_000) == (1_000, False)
    assert message_time(0, 2_000) == (2_000, True)


def test_a_tick_per_camera_frame_thinned_to_the_control_rate():
    assert is_tick(5, None, 10.0) and is_tick(5, 4, 0.0)
    period = 0.75e9 / 10.0  # 25 % tolerance for jitter
    assert not is_tick(int(period) - 1, 0, 10.0) and is_tick(int(period), 0, 10.0)
    assert not is_tick(-1, 0, 10.0)  # a stamp going back is no tick


def test_a_command_answers_the_frame_it_names_or_frames_received_before_it():
    assert answers(frame_stamp=7, frame_time=100, command_frame=7, command_time=50)  # named: wherever logged
    assert not answers(frame_stamp=7, frame_time=100, command_frame=8, command_time=200)
    assert answers(frame_stamp=7, frame_time=100, command_frame=None, command_time=101)
    assert answers(frame_stamp=7, frame_time=100, command_frame=0, command_time=101)  # 0 names no frame
    assert not answers(frame_stamp=7, frame_time=100, command_frame=None, command_time=100)  # strictly after


def test_first_answers_is_the_first_command_that_answers_each_frame():
    """The batch form (import-bag) equals the streaming form (recorder_node: each command
    goes to every frame it answers that has no action yet) on random command streams."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        n_frames, n_cmds = 12, 15
        f_times = np.sort(rng.integers(0, 100, n_frames))
        f_stamps = f_times - 5  # capture before arrival
        c_times = np.sort(rng.integers(0, 110, n_cmds))
        c_frames = [int(rng.choice(f_stamps)) if rng.random() < 0.4 else None for _ in range(n_cmds)]
        got = first_answers(f_stamps, f_times, c_frames, c_times)
        want = []
        for s, t in zip(f_stamps, f_times, strict=True):
            hit = [k for k in range(n_cmds) if answers(s, t, c_frames[k], c_times[k])]
            want.append(hit[0] if hit else -1)
        assert list(got) == want


def test_first_answers_deadline_and_first_of_two_commands_naming_a_frame():
    # frame 0 (stamp 10, logged 12): a command naming it at 30, then the hold naming it at 40
    got = first_answers([10, 20], [12, 22], [10, 10, None], [30, 40, 50], deadlines=[100, 45])
    assert list(got) == [0, -1]  # the first naming command; frame 1's only candidate is past its deadline


def test_stamped_history_keeps_stamp_order_and_the_newest_maxlen():
    h = StampedHistory(maxlen=4)
    for t, item in ((10, "a"), (30, "c"), (20, "b"), (20, "b2")):  # b arrives late; b2 ties it
        h.add(t, item)
    assert [h[i] for i in range(len(h))] == [(10, "a"), (20, "b"), (20, "b2"), (30, "c")]
    assert h.at_or_before(25) == "b2" and h.at_or_before(9) is None and h[-1] == (30, "c")
    h.add(40, "d")  # the oldest stamp goes
    assert len(h) == 4 and h[0] == (20, "b") and h.at_or_before(15) is None
    h.clear()
    assert len(h) == 0 and h.at_or_before(100) is None


def test_stamped_history_forgets_an_old_timeline_when_the_clock_goes_back():
    """A simulator reset sends the joint-state clock back to 0: the previous take's states
    (stamps 0..5 s) must not pass for the new take's. By stamp alone, a frame at 0.201 s would
    take the old take's 0.200 s state over the new take's 0.193 s one (the node used to search
    newest-received first, which the reset did not fool)."""
    ms = 1_000_000
    h = StampedHistory(maxlen=2048)
    for t in range(0, 5000, 10):
        h.add(t * ms, ("take1", t))
    for t in range(3, 200, 10):  # the clock restarts at 0
        h.add(t * ms, ("take2", t))
    assert h.at_or_before(201 * ms) == ("take2", 193) and h.clock_resets == 1
    assert h.at_or_before(2 * ms) is None and len(h) == 20
    h.add(150 * ms, ("late", 150))  # out of order by less than max_back_ns: kept, in its place
    assert h.clock_resets == 1 and h.at_or_before(151 * ms) == ("late", 150)


def test_clock_segments_start_a_timeline_where_the_clock_goes_back_more_than_the_bound():
    s = 1_000_000_000
    assert clock_segments([]) == []
    assert clock_segments([5 * s, 6 * s, 5.5 * s, 7 * s]) == [0, 0, 0, 0]  # out of order by 0.5 s: one timeline
    assert clock_segments([5 * s, 6 * s, 1 * s, 2 * s, 7 * s, 0]) == [0, 0, 1, 1, 1, 2]


@pytest.mark.parametrize("path", ["learning/bag_import.py", "robot_nodes/recorder_node.py",
                                  "robot_nodes/policy_node.py"])
def test_the_three_callers_pair_through_this_module(path):
    tree = ast.parse((ROOT / path).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "learning.alignment" in modules
    # no caller keeps a pairing loop of its own (the old `reversed(...) if s <= stamp` scans)
    assert "reversed(self.joints)" not in (ROOT / path).read_text()
    assert "reversed(self._joints)" not in (ROOT / path).read_text()
