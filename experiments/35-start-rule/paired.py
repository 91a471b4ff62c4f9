"""The paired differences 35's README quotes that no results.md prints: on each quality, MerPO
with the start rule minus MerPO from pi_c on the same (task, draw) units (two-stage bootstrap,
`vmerpo.benchmarks.paired`). Expert: pixel-expert/ against 32's expert run; medium: pixel-medium/
against its own `merpo_omega04` (32's MerPO, the same learner from pi_c at omega 0.4).

    python experiments/35-start-rule/paired.py --out experiments/35-start-rule/paired.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from vmerpo.benchmarks.paired import paired_difference  # noqa: E402


def units(path: Path, quality: str, method: str) -> dict[tuple[int, int], float]:
    doc = json.loads(path.read_text())
    return {(u["task"], u["draw"]): u["success_rate"] for u in doc["units"]
            if u["quality"] == quality and u["method"] == method}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out")
    a = p.parse_args()
    out = {
        "expert: merpo with the rule minus 32's merpo": paired_difference(
            units(HERE / "pixel-expert" / "results.json", "expert", "merpo"),
            units(HERE.parent / "32-pixel-full" / "expert" / "results.json", "expert", "merpo")),
        "medium: merpo with the rule minus merpo_omega04 (32's merpo)": paired_difference(
            units(HERE / "pixel-medium" / "results.json", "medium", "merpo"),
            units(HERE / "pixel-medium" / "results.json", "medium", "merpo_omega04")),
    }
    for k, v in out.items():
        print(f"{k}: {v['mean']:+.3f} [{v['low']:+.2f}, {v['high']:+.2f}] over {v['n_units']} units, {v['n_tasks']} tasks")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
