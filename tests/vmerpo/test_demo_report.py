"""The demo report's direct-vs-ROS comparison: the stated binomial rule, and the lines it writes."""

from __future__ import annotations

from vmerpo.commands.demo import DIRECT_EVAL, ROS_EVAL, _write_report, agree_within_binomial_noise


def test_two_proportion_rule():
    assert agree_within_binomial_noise(0, 10, 0, 10)
    assert agree_within_binomial_noise(3, 10, 5, 10)       # |0.2| <= 1.96 * 0.219
    assert not agree_within_binomial_noise(0, 10, 6, 10)   # |0.6| > 1.96 * 0.205
    assert not agree_within_binomial_noise(10, 40, 30, 40)


def _result(successes: list[bool]) -> dict:
    eps = [{"task_id": 40, "episode_index": i, "seed": i, "success": s, "return": 1.0 + i, "length": 150,
            "steps_to_success": 9 if s else None} for i, s in enumerate(successes)]
    return {"success_rate": sum(successes) / len(successes), "episodes": len(successes),
            "per_task": {"40": {}}, "episode_results": eps}


def test_report_has_the_ros_row_and_the_agreement_line(tmp_path):
    direct, ros = _result([True, False] * 5), _result([True, False] * 5)
    report = [{"step": s, "command": "vmerpo ...", "status": "ok", "result": r}
              for s, r in ((DIRECT_EVAL, direct), (ROS_EVAL, ros))]
    _write_report(tmp_path, report, 60.0)
    text = (tmp_path / "report.md").read_text()
    assert f"| {ROS_EVAL} | 0.50 | 10 |" in text
    assert "5/10 vs 5/10 successes: **agree within binomial noise**" in text
    assert "two-proportion z-test at the 5 % level" in text and "10/10 identical" in text
