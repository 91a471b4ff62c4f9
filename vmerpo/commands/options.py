"""Command-line options shared by several verbs, declared once: the simulated episodes that
`vmerpo collect`, `eval`, `ros-eval` and `bench learning` run, and the group that holds
experimental (research) options, off by default."""

from __future__ import annotations

import argparse

FAMILIES_HELP = "task family: reach-v3, push-v3, drawer-close-v3 or door-open-v3"
EXPERIMENTAL_TITLE = "experimental options (research; off by default; docs/algorithms.md#experimental-options)"


def experimental_group(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The one group every verb puts its research options in."""
    return p.add_argument_group(EXPERIMENTAL_TITLE)


def add_hand_init_noise(p: argparse.ArgumentParser | argparse._ArgumentGroup, default: float | None = 0.0,
                        note: str = "") -> None:
    p.add_argument("--hand-init-noise", type=float, default=default, metavar="M",
                   help="start each episode's hand at a random offset of up to +-M metres per axis, drawn "
                        "from the episode seed (default 0: Meta-World's fixed start, so a deterministic "
                        "policy repeats one outcome per task); evaluate a policy with the value its logs "
                        "were collected with" + (f"; {note}" if note else ""))


AIMS = {"tool-centre": True, "hand": False}


def add_aim(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--aim", choices=tuple(AIMS),
                   help="scripted policies (expert, and medium built on it): steer the tool centre, where "
                        "success is measured, or the hand, as Meta-World's expert does (reach then ends 4.5 cm "
                        "from the goal against a 5 cm threshold); default: the family's (hand)")


def aim_of(args: argparse.Namespace) -> bool | None:
    """--aim as the scripted policies take it (None: the family's default)."""
    return None if args.aim is None else AIMS[args.aim]


def add_goal_pin(p: argparse.ArgumentParser | argparse._ArgumentGroup, note: str = "") -> None:
    p.add_argument("--goal-pin", action="store_true",
                   help="draw a pin from the table up to the goal marker (reach, push), so that the one camera "
                        "sees the goal's height; logs collected with it need policies evaluated with it, and a "
                        "policy trained otherwise is refused" + (f"; {note}" if note else ""))


def add_episode_options(p: argparse.ArgumentParser, tasks_default: str, action_repeat: bool = True) -> None:
    """--env, --tasks, --seed, --image-size, --max-episode-steps [, --action-repeat],
    --hand-init-noise, and the experimental --goal-pin."""
    p.add_argument("--env", required=True, help=FAMILIES_HELP)
    p.add_argument("--tasks", default=tasks_default,
                   help="train, test, all, a count N (the first N meta-train tasks) or ids like 40,41 "
                        f"(default {tasks_default})")
    p.add_argument("--seed", type=int, default=0, help="base seed of the per-episode seeds (default 0)")
    p.add_argument("--image-size", type=int, default=64, help="camera image side: 64 (default), 84 or 128")
    p.add_argument("--max-episode-steps", type=int, default=150, help="episode cap in control steps (default 150)")
    if action_repeat:
        p.add_argument("--action-repeat", type=int, default=1, help="simulator steps per action (default 1)")
    add_hand_init_noise(p)
    add_goal_pin(experimental_group(p))


def add_spec_file(p: argparse.ArgumentParser) -> None:
    """--spec FILE: the spec of a store written by another tool that carries none."""
    p.add_argument("--spec", metavar="FILE",
                   help="YAML/JSON spec of a store written by another tool that carries none in its attrs "
                        "(`vmerpo spec STORE --out FILE` writes one); used for every store this command reads "
                        "that has no spec of its own")


def apply_spec_file(args: argparse.Namespace) -> None:
    """Describe every store this command opens without a spec of its own with the --spec file."""
    if getattr(args, "spec", None):
        from learning.store import use_spec
        from learning.store_foreign import load_spec_file

        use_spec(load_spec_file(args.spec))
