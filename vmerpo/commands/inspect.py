"""`vmerpo inspect STORE`: summary, validation, contact sheet and video of an episode store."""

from __future__ import annotations

import argparse
import json
import sys

from learning.inspect_store import (
    contact_sheet_and_returns,
    episodes_video,
    format_summary,
    summarize,
)
from learning.store import EpisodeStore
from vmerpo.commands.options import add_spec_file, apply_spec_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Validate an episode store and summarise it: episodes, frames, tasks, lengths, returns "
        "and success per task (and per behaviour quality), image shape, size on disk and "
        "compression. Every chunk is decompressed to check for damage unless --quick. "
        "Exit code 2 with one line naming the array/episode if the store is invalid. A store "
        "written by another tool (the same layout, no vmerpo spec) is described instead: its "
        "arrays' shapes and dtypes, its episodes, the key mapping vmerpo would use and what it "
        "still lacks for training (`vmerpo spec` writes the spec)."
    )
    p.add_argument("store", help="path or fsspec URL of a zarr episode store")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="contact sheet of frames + per-task return histogram")
    p.add_argument("--video", metavar="OUT.mp4", help="video of the chosen episodes")
    p.add_argument("--episodes", default="0,1,2",
                   help="episode indices for --plot/--video, comma-separated, or 'all' (default 0,1,2)")
    p.add_argument("--quick", action="store_true", help="skip decompressing every image chunk")
    p.add_argument("--overwrite", action="store_true", help="replace existing --plot/--video files")
    add_spec_file(p)


def _episodes(spec: str, n: int) -> list[int]:
    if spec == "all":
        return list(range(n))
    try:
        eps = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--episodes must be comma-separated integers or 'all', got {spec!r}") from None
    bad = [e for e in eps if not 0 <= e < n]
    if bad:
        raise ValueError(f"episode {bad[0]} out of range: the store has {n} episodes")
    return eps


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    for out in (args.plot, args.video):
        if out and Path(out).exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    apply_spec_file(args)
    from learning.store_foreign import describe, format_description, needs_description

    if needs_description(args.store):  # another tool's store, not yet described by a spec
        d = describe(args.store)
        if args.json:
            json.dump(d, sys.stdout, indent=2)
            print()
        else:
            print(format_description(d))
        return 0
    store = EpisodeStore.open(args.store, load="lazy")
    if not args.quick:
        store.verify()
    summary = summarize(store)
    eps = _episodes(args.episodes, store.n_episodes) if (args.plot or args.video) else []
    if args.plot:
        contact_sheet_and_returns(store, args.plot, eps)
        summary["plot"] = args.plot
    if args.video:
        summary["video_frames"] = episodes_video(store, args.video, eps)
        summary["video"] = args.video
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(format_summary(summary))
        for key in ("plot", "video"):
            if key in summary:
                print(f"wrote {summary[key]}")
    return 0
