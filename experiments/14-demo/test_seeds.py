"""seeds.py on the kept demo reports: three log draws of 4 tasks, the README's pooled numbers."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.studyutil import load_script

HERE = Path(__file__).resolve().parent
REPORTS = [HERE / "v2-det" / "report.json", HERE / "v2-seeds" / "seed1" / "report.json",
           HERE / "v2-seeds" / "seed2" / "report.json"]


def test_per_task_reads_each_report_and_the_pooled_gain_is_the_readmes(capsys, monkeypatch):
    mod = load_script(__file__, "seeds")
    first = mod.per_task(json.loads(REPORTS[0].read_text()))
    assert first["merpo"] == {40: 0.85, 41: 0.95, 42: 0.30, 43: 1.0} and first["logs"][40] == 0.6
    monkeypatch.setattr("sys.argv", ["seeds.py", *map(str, REPORTS)])
    mod.main()
    out = capsys.readouterr().out
    assert "merpo: 0.71" in out and "over 12 units" in out and "merpo minus bc: +0.13" in out
