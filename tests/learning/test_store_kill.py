"""Reliability: a writer killed with SIGKILL at random moments never loses a committed episode
and never leaves a store that fails to open (>= 20 kills)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from learning.store import EpisodeStore, EpisodeWriter
from tests.learning.storeutil import check_episode, spec

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64  # 85-row image chunks: streamed episodes flush several chunks before committing

WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from learning.store import EpisodeWriter
    from tests.learning.storeutil import episode
    with EpisodeWriter({path!r}, mode="a", log=lambda m: print("recovered:", m, flush=True)) as w:
        k = w.n_episodes
        while True:
            if k % 2:  # streamed, long: killed mostly between chunk flushes
                ep = episode(k, 200, {size})
                s = w.stream_episode(task_id=k % 3, provenance={{"seed": k}})
                for t in range(200):
                    s.append({{key: v[t] for key, v in ep.items()}})
                s.commit(success=True)
            else:
                w.add_episode(episode(k, None, {size}), task_id=k % 3, success=False,
                              provenance={{"seed": k}})
            print("committed", k, flush=True)
            k += 1
""")


def _length(k: int) -> int | None:
    return 200 if k % 2 else None


def test_sigkill_never_loses_a_committed_episode(tmp_path):
    path = tmp_path / "kill.zarr"
    EpisodeWriter(path, spec(size=SIZE), mode="w").close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT), path=str(path), size=SIZE))
    rng = random.Random(0)
    committed = -1
    recovered_messages = 0
    trials = 20
    for trial in range(trials):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        # let it commit at least one episode, then kill it at a random moment
        lines = []
        line = proc.stdout.readline()
        while line and not line.startswith("committed"):
            lines.append(line)
            line = proc.stdout.readline()
        assert line.startswith("committed"), f"trial {trial}: writer died: {lines}"
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        lines += [line, *out.splitlines()]
        recovered_messages += sum("dropped an incomplete episode" in m for m in lines)
        # a kill during the print can cut its line short ("committed" alone, seen once on CI):
        # only whole lines count, which can only under-count what was committed
        done = [int(m.group(1)) for x in lines if (m := re.fullmatch(r"committed (\d+)\s*", x))]
        committed = max(committed, *done)

        store = EpisodeStore.open(path)  # must always open
        assert store.n_episodes >= committed + 1, f"trial {trial}: lost a committed episode"
        for k in range(store.n_episodes):
            check_episode(store.episode(k), k, _length(k), SIZE)
    assert committed >= trials  # the writer made progress between kills
    assert recovered_messages >= 1  # some kills hit an uncommitted episode, and were recovered
