"""How close reach episodes end to the goal: run a policy on some tasks and print, per episode,
the distance of the tool centre (what success measures, 5 cm) to the goal at the end and at its
closest, and of the hand (`ee_xyz`). `--policy expert --aim hand`: Meta-World's expert as
published (our default), which steers the hand onto the goal; `--aim tool-centre`: aimed so the
tool centre ends on it. `--policy RUN_DIR` (an adapted policy, e.g. from `vmerpo bench
learning`'s `adapted/`) or `medium` shows whether failures are near misses at the threshold or
end far away; `--hand-init-noise` and `--episodes` evaluate over random hand starts, as `vmerpo
eval` does (same episode seeds, same safety limiter).

    python experiments/10-reach-margin/reach_margin.py --tasks 40,41,42,0,1,2 --aim hand [--json out.json]
    python experiments/10-reach-margin/reach_margin.py --policy RUN/adapted/medium_s0_t40_merpo_adp --tasks 40, \\
        --episodes 10 --hand-init-noise 0.05 --seed 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

SUCCESS_M = 0.05  # Meta-World reach: tool centre within 5 cm of the goal


class _Tracked:
    """A policy that also records the tool centre's distance to the goal before every action."""

    def __init__(self, policy, env) -> None:
        self.policy, self.env, self.dist = policy, env, []

    def __getattr__(self, name: str):  # seed, set_applied_action: whatever the policy has
        return getattr(self.policy, name)

    def reset(self) -> None:
        self.dist = []
        self.policy.reset()

    def act(self, obs):
        import numpy as np

        self.dist.append(float(np.linalg.norm(self.env.tool_centre() - self.env._mw._target_pos)))
        return self.policy.act(obs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="reach-v3")
    p.add_argument("--tasks", default="40,41,42,0,1,2", help="comma-separated task ids")
    p.add_argument("--policy", default="expert", help="expert (default), medium, random or a run directory")
    p.add_argument("--aim", choices=("hand", "tool-centre"), default="hand",
                   help="--policy expert: what it steers onto the goal (default: the hand, as published)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per task (default 1)")
    p.add_argument("--seed", type=int, default=0, help="base of the episode seeds (bench learning: 1000 + seed)")
    p.add_argument("--hand-init-noise", type=float, default=0.0, metavar="M", help="random hand start (m)")
    p.add_argument("--json", help="write the rows and a summary here")
    a = p.parse_args(argv)
    import numpy as np

    from sim.envs import make_env
    from sim.evaluate import episode_seed, run_episode
    from sim.policies import ExpertPolicy
    from vmerpo.commands.eval import load_policy

    env = make_env(a.family, hand_init_noise=a.hand_init_noise)
    inner = (ExpertPolicy(env, tool_centre_aimed=a.aim == "tool-centre") if a.policy == "expert"
             else load_policy(a.policy, env))
    policy, limiter = _Tracked(inner, env), env.safety_limiter()
    rows = []
    for task in [int(t) for t in a.tasks.split(",") if t]:
        for k in range(a.episodes):
            r = run_episode(env, policy, limiter, task, episode_seed(a.seed, task, k), k)
            goal = np.array(env._mw._target_pos)
            tcp, hand = env.tool_centre(), env.ee_position()
            d = policy.dist + [float(np.linalg.norm(tcp - goal))]
            rows.append({"task": task, "episode": k, "policy": a.policy, "success": bool(r.success),
                         "return": float(r.episode_return), "tool_centre_to_goal_m": d[-1],
                         "closest_tool_centre_to_goal_m": min(d), "hand_to_goal_m": float(np.linalg.norm(hand - goal)),
                         "hand_start": [float(x) for x in env.hand_start],
                         "tool_centre_minus_hand_m": [float(x) for x in tcp - hand]})
            q = rows[-1]
            print(f"task {task} ep {k}: tool centre {100 * q['tool_centre_to_goal_m']:.2f} cm from the goal at the "
                  f"end, {100 * q['closest_tool_centre_to_goal_m']:.2f} at its closest (success < 5 cm: "
                  f"{q['success']}), hand {100 * q['hand_to_goal_m']:.2f} cm", flush=True)
    env.close()
    closest = np.array([q["closest_tool_centre_to_goal_m"] for q in rows])
    summary = {"episodes": len(rows), "success": float(np.mean([q["success"] for q in rows])),
               "closest_within_5cm": float(np.mean(closest < SUCCESS_M)),
               "closest_5_to_7cm": float(np.mean((closest >= SUCCESS_M) & (closest < 0.07))),
               "closest_beyond_7cm": float(np.mean(closest >= 0.07)),
               "median_final_cm": float(100 * np.median([q["tool_centre_to_goal_m"] for q in rows]))}
    print(json.dumps(summary))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"rows": rows, "summary": summary, "args": vars(a)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
