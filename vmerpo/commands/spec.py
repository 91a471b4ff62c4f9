"""`vmerpo spec STORE`: describe a store written by another tool so that every verb reads it."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write a vmerpo spec for a zarr store written by another tool (diffusion_policy's "
        "ReplayBuffer layout: data/<key> concatenated over time, meta/episode_ends). What the store "
        "shows is read from it: the image size, the state and action channel counts, the range of "
        "the actions seen (the action limits), the task ids in meta/episode_task, and its array "
        "names, mapped to vmerpo's from common ones (img, rgb -> image; obs, agent_pos, qpos -> "
        "state; actions -> action; rewards -> reward; done -> terminal; ...). What it cannot show "
        "comes from flags or --from FILE: the control rate and the action type, at least. "
        "Arrays it lacks that vmerpo can do without are listed as absent (terminal: no "
        "terminations; timestamp: from the rate; episode_task: one task; episode_success: "
        "unknown); image, state, action and reward are needed. The spec is checked by opening "
        "the store with it, then written into the store's attrs (its arrays are not touched), or "
        "with --out into a YAML/JSON file that every verb reading a store takes as --spec FILE "
        "(for a store you may not write to). vmerpo never appends to such a store."
    )
    p.epilog = ("example: vmerpo spec pusht.zarr --control-hz 10 --action-type ee_delta --key image=img "
                "--task 0:push-t:train")
    p.add_argument("store", help="path or fsspec URL of the other tool's zarr store")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="YAML/JSON file of spec fields to start from (flags override it)")
    p.add_argument("--control-hz", type=float, help="control ticks per second: one row per tick")
    p.add_argument("--action-type", help="ee_delta | twist | joint_position | joint_velocity")
    p.add_argument("--robot", help="robot name (default: unknown)")
    p.add_argument("--state-names", help="comma-separated names of the state channels (default state_0, ...)")
    p.add_argument("--action-names", help="comma-separated names of the action channels (default action_0, ...)")
    p.add_argument("--action-low", help="comma-separated action lower limits (default: the lowest seen)")
    p.add_argument("--action-high", help="comma-separated action upper limits (default: the highest seen)")
    p.add_argument("--key", action="append", default=[], metavar="OURS=THEIRS",
                   help="map one of vmerpo's arrays to the store's name, e.g. image=camera_1 (repeatable; "
                        "common names are mapped without it)")
    p.add_argument("--task", action="append", default=[], metavar="ID[:NAME[:SPLIT]]",
                   help="a task table entry (repeatable; default: the ids in meta/episode_task, or one task 0, "
                        "all split train)")
    p.add_argument("--out", metavar="FILE.yaml", help="write the spec to this file (pass it as --spec FILE) "
                                                      "instead of the store's attrs")
    p.add_argument("--force", action="store_true", help="replace a spec the store's attrs already hold, or --out")
    p.add_argument("--json", action="store_true", help="print the spec as JSON")


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from learning.store_foreign import (
        dump_spec_file,
        infer_spec,
        parse_key,
        read_fields,
        write_spec,
    )

    if args.out and Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to replace it")
    fields = read_fields(args.from_file) if args.from_file else {}
    for name in ("control_hz", "action_type", "robot"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    for name in ("state_names", "action_names"):
        if getattr(args, name):
            fields[name] = [x.strip() for x in getattr(args, name).split(",") if x.strip()]
    for name in ("action_low", "action_high"):
        if getattr(args, name):
            fields[name] = _floats(getattr(args, name), "--" + name.replace("_", "-"))
    keys = dict(parse_key(k) for k in args.key)
    spec = infer_spec(args.store, fields, keys=keys, tasks=args.task)
    if args.out:
        dump_spec_file(spec, args.out)
    else:
        write_spec(args.store, spec, force=args.force)
    if args.json:
        json.dump(spec.to_attrs(), sys.stdout, indent=1)
        print()
    else:
        mapped = ", ".join(f"{k} <- {v}" for k, v in spec.keys.items()) or "none"
        print(f"{args.store}: {spec.image_size}x{spec.image_size} images, {len(spec.state_names)} state and "
              f"{len(spec.action_names)} action channels, {spec.control_hz:g} Hz, {spec.action_type}; "
              f"tasks {', '.join(str(t['id']) for t in spec.tasks)}; keys mapped: {mapped}; "
              f"absent: {', '.join(spec.absent) or 'none'}")
        print(f"wrote the spec to {args.out} (pass --spec {args.out})" if args.out
              else f"wrote the spec into {args.store}'s attrs")
    return 0
