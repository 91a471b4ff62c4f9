"""`vmerpo <verb>`: the command line (contract 4).

Each verb lives in `vmerpo/commands/<verb>.py` with `add_arguments(parser)` and
`run(args) -> int`; this file only dispatches. Bad input (ValueError, OSError, KeyError from
the layers; TypeError, MemoryError, pickle.UnpicklingError and RuntimeError, which damaged or
oversized inputs raise inside torch, numpy and zarr) becomes one line on stderr and exit code
2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pickle
import sys

# Raised by the layers for bad input (ValueError, OSError, KeyError) or inside torch, numpy and
# zarr on damaged or oversized input: one line, exit 2 (named by type where it is not a ValueError).
INPUT_ERRORS = (ValueError, OSError, KeyError, TypeError, MemoryError, pickle.UnpicklingError, RuntimeError)

# verb -> (module under vmerpo.commands, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "collect": ("collect", "collect MuJoCo episodes with a behaviour policy into a zarr store"),
    "inspect": ("inspect", "summarise and validate an episode store (--json, --plot, --video)"),
    "spec": ("spec", "describe a store written by another tool (ReplayBuffer layout) so every verb reads it"),
    "repair": ("repair", "truncate the uncommitted rows a killed writer left in a store (--dry-run)"),
    "import-bag": ("import_bag", "import a rosbag2 (sqlite3/MCAP) recording into a zarr store"),
    "train-model": ("train_model", "train the latent world model (LOMPO RSSM + prior ensemble)"),
    "train": ("train", "world model (if none given) + MerPO meta-training"),
    "adapt": ("adapt", "adapt a meta-trained run to a new task from its small log"),
    "export": ("export", "export a trained policy to a single-file ONNX model"),
    "eval": ("eval", "closed-loop evaluation in MuJoCo (expert|random|RUN_DIR|PATH.onnx)"),
    "launch": ("launch", "start a launch file's nodes where only the ROS 2 wheels are installed"),
    "ros-eval": ("ros_eval", "closed-loop evaluation through ROS 2 (sim_node + policy_node, lockstep)"),
    "bench": ("bench", "benchmarks that print numbers and write JSON"),
    "demo": ("demo", "the whole pipeline end to end on an embedded default"),
}


def _load(verb: str):
    """The verb's module, or None if this version does not have it yet."""
    module, _ = VERBS[verb]
    try:
        return importlib.import_module(f"vmerpo.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"vmerpo.commands.{module}":
            return None
        raise


def available(verb: str) -> bool:
    return importlib.util.find_spec(f"vmerpo.commands.{VERBS[verb][0]}") is not None


def build_parser(verbs: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmerpo",
        description="Image-based offline meta-RL for manipulators: zarr logs -> LOMPO world "
        "model -> MerPO/RAC -> ONNX -> ROS 2 / MuJoCo.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in verbs if verbs is not None else VERBS:
        module, help_ = VERBS[verb]
        p = sub.add_parser(verb, help=help_, description=help_)
        mod = _load(verb)
        if mod is None:
            p.set_defaults(_unavailable=True)
        else:
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Build only the parser of the verb asked for: verbs import heavy layers (torch, mujoco).
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([verb] if verb in VERBS else None)
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    if getattr(args, "_unavailable", False):
        print(f"vmerpo {args.verb}: not yet available in this version", file=sys.stderr)
        return 3
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"vmerpo {args.verb}: interrupted", file=sys.stderr)
        return 130
    except INPUT_ERRORS as e:
        if args.debug:
            raise
        text = str(e).strip()
        msg = text.splitlines()[0] if text else type(e).__name__
        if not isinstance(e, (ValueError, OSError, KeyError)):
            msg = (f"{type(e).__name__}: {msg}" if text else msg) + " (--debug shows the traceback)"
        print(f"vmerpo {args.verb}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
