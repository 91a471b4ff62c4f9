"""`vmerpo launch FILE [name:=value ...]`: a YAML launch file's nodes, without ROS 2 installed."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Start the nodes of one of vmerpo's ROS 2 YAML launch files as processes, where only the "
        "rclpy wheels are installed (no `ros2` command). On a machine with ROS 2 installed, use "
        "`ros2 launch vmerpo FILE` instead: it reads the same file. Children run with the "
        "shared-memory-only DDS configuration; Ctrl-C stops them all; the exit code is non-zero "
        "if a node dies."
    )
    p.add_argument("launch_file", help="path to a .launch.yaml file, or a file name under the "
                   "package's launch/ directory (e.g. sim_policy.launch.yaml)")
    p.add_argument("launch_args", nargs="*", metavar="NAME:=VALUE", help="launch arguments")
    p.add_argument("--stop-timeout", type=float, default=5.0,
                   help="seconds a node gets to exit after Ctrl-C before it is killed (default 5)")
    p.add_argument("--dry-run", action="store_true", help="print the node commands and exit")


def resolve_launch_file(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    share = Path(__file__).resolve().parents[2] / "launch" / name
    if share.is_file():
        return share
    raise FileNotFoundError(f"launch file {name} not found (neither a path nor in launch/)")


def run(args: argparse.Namespace) -> int:
    from robot_nodes.launcher import Launcher, load_launch_file, parse_launch_args

    nodes = load_launch_file(resolve_launch_file(args.launch_file), parse_launch_args(args.launch_args))
    if args.dry_run:
        for n in nodes:
            print(" ".join(n.command()))
        return 0
    return Launcher(nodes, stop_timeout_s=args.stop_timeout).run()
