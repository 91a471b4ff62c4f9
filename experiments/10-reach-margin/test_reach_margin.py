"""reach_margin.py (this folder): how close reach episodes end to the goal, for the scripted
expert and over random hand starts (the distances are the simulator's, checked against its success flag)."""

from __future__ import annotations

import json

import pytest

from experiments.studyutil import load_script

pytest.importorskip("metaworld")
reach_margin = load_script(__file__, "reach_margin")


def test_expert_margin_and_random_starts(tmp_path):
    out = tmp_path / "m.json"
    assert reach_margin.main(["--tasks", "40,", "--episodes", "2", "--hand-init-noise", "0.05", "--seed", "3",
                              "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert len(rows) == 2 and res["summary"]["episodes"] == 2
    for r in rows:
        assert r["closest_tool_centre_to_goal_m"] <= r["tool_centre_to_goal_m"] + 1e-12
        # Meta-World's success flag is the tool centre within 5 cm: the distances agree with it
        assert r["success"] == (r["closest_tool_centre_to_goal_m"] <= reach_margin.SUCCESS_M)
        # the published expert steers the hand onto the goal: it ends with ~4.5 cm of tool-centre offset
        assert r["hand_to_goal_m"] < 0.015 and 0.035 < r["tool_centre_to_goal_m"] < 0.05
    assert rows[0]["hand_start"] != rows[1]["hand_start"]  # two random starts
    assert res["summary"]["closest_within_5cm"] == res["summary"]["success"] == 1.0
