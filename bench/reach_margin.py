"""How much room Meta-World's reach success leaves: run the scripted expert on some tasks and
print, at the end of each episode, the distances of the hand (`ee_xyz`) and of the tool centre
(what success measures, 5 cm) to the goal. `--aim hand`: Meta-World's expert as published (our
default), which steers the hand onto the goal; `--aim tool-centre`: aimed so the tool centre
ends on it.

    python bench/reach_margin.py --tasks 40,41,42,0,1,2 --aim hand [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/sim.py must not shadow `sim`


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="reach-v3")
    p.add_argument("--tasks", default="40,41,42,0,1,2", help="comma-separated task ids")
    p.add_argument("--aim", choices=("hand", "tool-centre"), default="hand",
                   help="what the expert steers onto the goal (default: the hand, as published)")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args()
    import numpy as np

    from sim.envs import make_env
    from sim.policies import ExpertPolicy

    env = make_env(a.family)
    policy = ExpertPolicy(env, tool_centre_aimed=a.aim == "tool-centre")
    rows = []
    for task in [int(t) for t in a.tasks.split(",")]:
        env.set_task(task)
        obs = env.reset()
        policy.reset()
        for _ in range(env.max_episode_steps):
            obs, *_ = env.step(np.clip(policy.act(obs), -1, 1))
        goal = np.array(env._mw._target_pos)
        tcp, hand = env.tool_centre(), env.ee_position()
        rows.append({"task": task, "aim": a.aim, "tool_centre_to_goal_m": float(np.linalg.norm(tcp - goal)),
                     "hand_to_goal_m": float(np.linalg.norm(hand - goal)),
                     "tool_centre_minus_hand_m": [float(x) for x in tcp - hand]})
        r = rows[-1]
        print(f"task {task}: tool centre {100 * r['tool_centre_to_goal_m']:.2f} cm from the goal "
              f"(success < 5 cm), hand {100 * r['hand_to_goal_m']:.2f} cm, tool centre - hand "
              f"{np.round(100 * (tcp - hand), 2)} cm")
    env.close()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
