"""split.py on the kept push results reproduces the README's table."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.studyutil import load_script

HERE = Path(__file__).resolve().parent


def test_split_gives_the_readme_numbers():
    rep = load_script(__file__, "split").split(json.loads((HERE / "push-medium" / "results.json").read_text()), "medium")
    assert [rep[k]["means"]["merpo"]["n_units"] for k in rep] == [30, 30, 60]
    allm = rep["all draws"]
    assert round(allm["means"]["merpo"]["mean"], 2) == 0.61 and round(allm["means"]["merpo_omega04"]["mean"], 2) == 0.56
    assert round(allm["paired"]["merpo - bc"]["mean"], 2) == 0.54
    new = rep["draws 3-5 (new)"]["paired"]["merpo - merpo_omega04"]
    assert round(new["mean"], 2) == 0.02 and new["low"] < 0 < new["high"]  # the gain is not confirmed
    assert json.loads((HERE / "push-medium" / "split.json").read_text()) == json.loads(json.dumps(rep))
