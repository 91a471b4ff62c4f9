"""The one safety limiter: clip, rate limit, workspace box, hold on invalid input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from learning.runtime.safety import SafetyLimiter

LOW, HIGH = [-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]


def test_clips_to_limits_and_returns_float32():
    lim = SafetyLimiter(LOW, HIGH)
    out = lim.limit([2.0, -3.0, 0.5, 0.0])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.0, -1.0, 0.5, 0.0])
    assert lim.stats.clipped == 1


def test_rate_limit_from_previous_applied_action():
    lim = SafetyLimiter(LOW, HIGH, max_delta=0.25)
    np.testing.assert_allclose(lim.limit([1.0, -1.0, 0.1, 0.0]), [0.25, -0.25, 0.1, 0.0])
    np.testing.assert_allclose(lim.limit([1.0, -1.0, 0.1, 0.0]), [0.5, -0.5, 0.1, 0.0])
    np.testing.assert_allclose(lim.previous_action, [0.5, -0.5, 0.1, 0.0])
    lim.reset()  # a new episode starts from the hold action
    np.testing.assert_allclose(lim.limit([1.0, 0.0, 0.0, 0.0]), [0.25, 0.0, 0.0, 0.0])


def test_workspace_box_shrinks_outward_moves_only():
    lim = SafetyLimiter(LOW, HIGH, workspace_low=[-0.5, 0.4, 0.05],
                        workspace_high=[0.5, 1.0, 0.5], position_scale=0.01)
    # 2 mm below the ceiling: +z may move at most 0.2 units (2 mm); x is free
    out = lim.limit([1.0, 0.0, 1.0, 1.0], ee_position=[0.0, 0.7, 0.498])
    np.testing.assert_allclose(out, [1.0, 0.0, 0.2, 1.0], atol=1e-6)
    # moving back into the box is never limited
    np.testing.assert_allclose(lim.limit([0, 0, -1.0, 0], ee_position=[0.0, 0.7, 0.498]),
                               [0, 0, -1.0, 0])
    # already outside (above) the box: no further outward motion, inward allowed
    out = lim.limit([0.3, 0.0, 0.7, 0.0], ee_position=[0.0, 0.7, 0.6])
    np.testing.assert_allclose(out, [0.3, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="end-effector position"):
        lim.limit([0, 0, 0, 0])


@pytest.mark.parametrize("bad", [[np.nan, 0, 0, 0], [0, np.inf, 0, 0], [0, 0, -np.inf, 0],
                                 "not a number"])
def test_non_finite_input_gives_hold_action(bad):
    hold = [0.0, 0.0, 0.0, -1.0]
    lim = SafetyLimiter(LOW, HIGH, max_delta=0.5, hold_action=hold)
    lim.limit([0.4, 0.4, 0.4, 0.4])
    out = lim.limit([bad, 0, 0, 0] if isinstance(bad, str) else bad)
    np.testing.assert_array_equal(out, hold)
    assert np.all(np.isfinite(out)) and lim.stats.invalid == 1
    # the hold action is what was applied: the rate limit continues from it
    np.testing.assert_allclose(lim.limit([1, 1, 1, 1]), [0.5, 0.5, 0.5, -0.5])


def test_non_finite_ee_position_gives_hold_action():
    lim = SafetyLimiter(LOW, HIGH, workspace_low=[0, 0, 0], workspace_high=[1, 1, 1],
                        position_scale=0.01)
    out = lim.limit([0.5, 0.5, 0.5, 0.5], ee_position=[np.nan, 0.5, 0.5])
    np.testing.assert_array_equal(out, [0, 0, 0, 0])


def test_random_inputs_always_inside_limits_and_rate():
    rng = np.random.default_rng(0)
    lim = SafetyLimiter([-1, -2, 0], [1, 2, 3], max_delta=[0.1, 0.5, np.inf],
                        hold_action=[0, 0, 0])
    prev = np.zeros(3)
    for _ in range(2000):
        a = rng.normal(0, 5, 3)
        if rng.random() < 0.05:
            a[rng.integers(3)] = rng.choice([np.nan, np.inf, -np.inf])
        out = lim.limit(a)
        assert np.all(np.isfinite(out))
        assert np.all(out >= [-1, -2, 0]) and np.all(out <= [1, 2, 3])
        if np.all(np.isfinite(a)):
            assert np.all(np.abs(out[:2] - prev[:2]) <= np.array([0.1, 0.5]) + 1e-6)
        prev = out.astype(np.float64)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="below"):
        SafetyLimiter([1, 0], [0, 1])
    with pytest.raises(ValueError, match="outside the action limits"):
        SafetyLimiter(LOW, HIGH, hold_action=[2, 0, 0, 0])
    with pytest.raises(ValueError, match="both"):
        SafetyLimiter(LOW, HIGH, workspace_low=[0, 0, 0])
    with pytest.raises(ValueError, match="channels"):
        SafetyLimiter(LOW, HIGH).limit([0, 0])


def test_imports_neither_torch_nor_mujoco():
    code = ("import sys, learning.runtime.safety; "
            "print(sorted(m for m in ('torch', 'mujoco') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_toward_a_hold_target_is_clipped_and_rate_limited_and_ignores_non_finite_targets():
    lim = SafetyLimiter([-1.0, -1.0], [1.0, 1.0], max_delta=0.1)
    lim.reset([0.5, 0.5])
    np.testing.assert_allclose(lim.toward([0.5, 0.5]), [0.5, 0.5])  # holding: no motion
    np.testing.assert_allclose(lim.toward([5.0, -5.0]), [0.6, 0.4], atol=1e-6)  # one step, not a jump
    np.testing.assert_allclose(lim.toward([np.nan, 0.0]), [0.6, 0.4], atol=1e-6)  # corrupt: stay
    with pytest.raises(ValueError, match="channels"):
        lim.toward([0.0])
