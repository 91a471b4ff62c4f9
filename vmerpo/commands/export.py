"""`vmerpo export`: a trained run -> one self-contained ONNX file with its spec."""

from __future__ import annotations

import argparse
import json

from vmerpo.commands.options import add_spec_file, apply_spec_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Export the run's deployed policy (world-model filter step + actor mean, actions scaled "
        "and clipped to the robot's limits) to a single ONNX file with a dynamic batch axis and "
        "the spec JSON in metadata_props['vmerpo.spec']. --check compares onnxruntime with the "
        "torch policy over a closed-loop rollout of recorded images."
    )
    p.add_argument("--run", required=True, help="adapted run (or meta run: exports pi_c)")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--check", action="store_true", help="parity check against torch (max abs diff)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_spec_file(p)


def run(args: argparse.Namespace) -> int:
    from learning.export import export_policy
    from learning.merpo_train import load_policy, parity_check

    apply_spec_file(args)  # a run trained on another tool's store with --spec FILE reads it again
    module, spec = load_policy(args.run)
    path = export_policy(module, spec, args.out, overwrite=args.overwrite)
    result = {"out": str(path), "bytes": path.stat().st_size, "spec": json.loads(spec.to_json())}
    if args.check:
        result["parity_max_abs_diff"] = parity_check(args.run, path)
        result["parity_ok"] = result["parity_max_abs_diff"] <= 1e-4
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"wrote {path} ({result['bytes'] / 1024:.0f} KiB)")
        if args.check:
            print(f"parity: max |onnxruntime - torch| = {result['parity_max_abs_diff']:.2e} over a "
                  f"closed-loop rollout ({'ok' if result['parity_ok'] else 'FAILED, above 1e-4'})")
    return 0 if result.get("parity_ok", True) else 1
