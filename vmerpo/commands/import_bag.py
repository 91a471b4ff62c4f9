"""`vmerpo import-bag BAG --out logs.zarr ...`: a rosbag2 recording into the episode store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _bools(text: str) -> list[bool]:
    table = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    try:
        return [table[x.strip().lower()] for x in text.split(",") if x.strip()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected comma-separated 1/0 values, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Import a rosbag2 recording (sqlite3 or MCAP) into a zarr episode store: ticks follow the "
        "camera (thinned to --control-hz), state = newest joint state stamped at or before each image "
        "(header stamps; the bag's log time only for a message without one, counted in the summary), "
        "action = first command after it; episodes split on camera gaps or marker messages; images resized "
        "by the one preprocessing function (centre crop). A reward source is required: "
        "--reward-topic, --reward sparse-success (with --success or --success-topic), or --reward-fn."
    )
    p.add_argument("bag", help="rosbag2 directory (or .db3/.mcap file)")
    p.add_argument("--out", required=True, help="zarr store to create (or append to with --append)")
    p.add_argument("--image-topic", required=True)
    p.add_argument("--command-topic", required=True,
                   help="Float64MultiArray, TwistStamped or Twist commands")
    p.add_argument("--joint-states-topic", help="sensor_msgs/JointState (the state)")
    p.add_argument("--task-id", type=int, default=0)
    p.add_argument("--task-name", default="")
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="the task's split in the store's task table; a task id the table lacks is added "
                        "(default train)")
    p.add_argument("--episode-gap-s", type=float, default=1.0,
                   help="a camera pause longer than this ends an episode (default 1.0)")
    p.add_argument("--episode-marker-topic", help="every message on this topic starts a new episode")
    p.add_argument("--control-hz", type=float, default=0.0, help="tick rate; 0: every camera frame")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--state-names", type=_names, help="joint names forming the state (default: all)")
    p.add_argument("--action-names", type=_names)
    p.add_argument("--action-low", type=_floats)
    p.add_argument("--action-high", type=_floats)
    p.add_argument("--action-type", choices=["ee_delta", "twist", "joint_position", "joint_velocity"])
    p.add_argument("--robot", default="robot")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--reward-topic", help="std_msgs/Float64 or Float32 reward topic")
    src.add_argument("--reward", choices=["sparse-success"], help="1 on the last row of successful episodes")
    src.add_argument("--reward-fn", metavar="MODULE:FUNCTION",
                     help="fn(episode: dict of arrays, success: bool|None) -> rewards [T]")
    p.add_argument("--success", type=_bools, help="per-episode success, e.g. 1,0,1 (sparse-success)")
    p.add_argument("--success-topic", help="std_msgs/Bool; an episode succeeded if any message is true")
    p.add_argument("--bad-frames", choices=["skip", "refuse"], default="skip",
                   help="an image that cannot be decoded: skip its row (counted per episode in the summary "
                        "and the episode's provenance; default) or refuse the bag naming the frame")
    p.add_argument("--append", action="store_true",
                   help="append to an existing store: action limits, action names and the rate come from "
                        "the store unless given (a measured camera rate within 2 %% of the store's is taken "
                        "as the store's), a new --task-id extends its task table")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--zarr-format", type=int, choices=[2, 3], default=2)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from learning.bag_import import BagImportConfig, import_bag

    if Path(args.out).exists() and not (args.append or args.overwrite):
        raise FileExistsError(f"{args.out} exists; pass --append or --overwrite")
    if args.success is not None and args.reward != "sparse-success":
        raise ValueError("--success only applies with --reward sparse-success")
    reward = "topic" if args.reward_topic else ("fn" if args.reward_fn else "sparse-success")
    cfg = BagImportConfig(
        bag=args.bag, out=args.out, image_topic=args.image_topic, command_topic=args.command_topic,
        joint_states_topic=args.joint_states_topic, task_id=args.task_id, task_name=args.task_name, split=args.split,
        episode_gap_s=args.episode_gap_s, marker_topic=args.episode_marker_topic,
        control_hz=args.control_hz, image_size=args.image_size, state_names=args.state_names,
        action_names=args.action_names, action_low=args.action_low, action_high=args.action_high,
        action_type=args.action_type, robot=args.robot, reward=reward, reward_topic=args.reward_topic,
        success=args.success, success_topic=args.success_topic, reward_fn=args.reward_fn,
        overwrite=args.overwrite, zarr_format=args.zarr_format, bad_frames=args.bad_frames,
    )
    summary = import_bag(cfg, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"imported {summary['episodes_imported']} episodes ({summary['rows']} rows) from "
              f"{summary['bag']} into {summary['out']} ({summary['episodes_in_store']} episodes in the store; "
              f"{summary['ticks_dropped']} ticks dropped, {summary['frames_skipped']} undecodable frames skipped"
              + (f", {summary['rows_log_time']} rows paired by log time" if summary["rows_log_time"] else "") + ")")
    return 0
