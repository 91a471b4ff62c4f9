"""`vmerpo repair STORE`: remove the rows a killed writer left past the last committed episode."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Truncate what an interrupted writer left past the last committed episode: rows of every "
        "data/ array past meta/episode_ends[-1], entries of the meta/ arrays past the committed "
        "episode count, a half-written commit entry and temp files. vmerpo's readers ignore "
        "them; other zarr-2 readers (diffusion_policy's ReplayBuffer) need every data/ array to "
        "end where meta/episode_ends does. Committed episodes are never changed. Takes the "
        "writer lock (refused while a writer is running) and is safe to interrupt: rerun it to "
        "finish. A damaged store is refused, changing nothing, with exit code 2 and one line "
        "naming the array."
    )
    p.add_argument("store", help="path or fsspec URL of a zarr episode store")
    p.add_argument("--dry-run", action="store_true", help="report what would be removed; change nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from learning.store import repair_store

    result = repair_store(args.store, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    kept = f"{result['episodes']} committed episodes ({result['frames']} frames)"
    leftover = result["leftover"]
    if not leftover and not result["partial_files"]:
        print(f"{result['path']}: nothing to repair; {kept}, no rows past the last commit")
        return 0
    verb = "would remove" if args.dry_run else "removed"
    data = [f"{k} {n}" for k, n in leftover.items() if k.startswith("data/")]
    meta = [f"{k} {n}" for k, n in leftover.items() if not k.startswith("data/")]
    parts = ([f"uncommitted rows {', '.join(data)}"] if data else []) + \
        ([f"entries {', '.join(meta)}"] if meta else [])
    if result["partial_files"]:
        parts.append(f"{result['partial_files']} temp file(s)")
    print(f"{result['path']}: {verb} {'; '.join(parts)}; {kept} {'stay' if args.dry_run else 'kept'}")
    return 0
