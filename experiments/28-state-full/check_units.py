"""Every (quality, method, task, draw) unit two state-track results share, compared:
    python experiments/28-state-full/check_units.py experiments/18-merpo-v2/state-full/results.json \
        experiments/28-state-full/results.json
prints how many shared units there are and how many differ (per quality and method)."""

from __future__ import annotations

import json
import sys
from collections import Counter


def units(path: str) -> dict[tuple, float]:
    r = json.load(open(path))
    return {(u["quality"], u["method"], u["task"], u["draw"]): u["success_rate"] for u in r["units"]}


if __name__ == "__main__":
    a, b = units(sys.argv[1]), units(sys.argv[2])
    shared = set(a) & set(b)
    differ = Counter((k[0], k[1]) for k in shared if a[k] != b[k])
    print(f"{len(shared)} shared units, {sum(differ.values())} differ" + (f": {dict(differ)}" if differ else ""))
