"""rosbag2 (sqlite3 or MCAP) -> contract-1 episode store, with the `rosbags` library.

Torch-free and ROS-free: runs wherever the store does. Alignment is `learning.alignment`'s,
the one rule recorder_node and policy_node follow (contract 1): ticks follow the camera,
thinned to `control_hz`; a tick's state is the newest joint state stamped at or before its
image (header stamps; the bag's log time only for a message whose header stamp is zero,
counted per episode in the `rows_log_time` provenance and in the summary); its action is the
first command logged after the image, or the command that names the frame
(`frame_stamp_ns=` in a Float64MultiArray's layout label, as vmerpo's policy node writes);
trailing ticks with no command are dropped. The stored timestamp is the image's header stamp
(its log time if it has none).

Episodes split where the camera pauses longer than `episode_gap_s`, where its clock goes back
(a simulator reset: joint states pair within their own timeline), or at each message on a
marker topic. Images are resized by the one preprocessing function (centre crop, recorded in
the store attrs). Rewards: a reward topic (the sum of rewards logged during the transition
t -> t+1), `sparse-success` (1 on the last row of a successful episode; success from the
command line or a success topic), or a user function `module:function` called as
`fn(episode: dict[str, np.ndarray], success: bool | None) -> rewards [T]`.

Two passes over the bag: the first reads times and the small topics, the second decodes only
the images that become rows and streams them into the store, so large bags never sit in RAM.
Each episode's provenance names its bag (`bag`, the absolute path; `bag_start_ns`, its first
message's log time, which tells a new recording at the same path apart) and its index in the
bag (`bag_episode`); appending a bag whose episodes the store already holds skips those, so an
interrupted batch import (`import_bags`) continues where it stopped.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from learning.alignment import (
    CLOCK_BACK_NS,
    clock_segments,
    first_answers,
    is_tick,
    message_time,
    newest_at_or_before_each,
)
from learning.store import EpisodeWriter, StoreSpec
from perception.preprocess import decode_compressed, preprocess_spec, to_model_image

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
COMMAND_TYPES = ("std_msgs/msg/Float64MultiArray", "geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/Twist")
REWARD_TYPES = ("std_msgs/msg/Float64", "std_msgs/msg/Float32")
FRAME_STAMP_LABEL = "frame_stamp_ns="
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


@dataclass
class BagImportConfig:
    bag: str
    out: str
    image_topic: str
    command_topic: str
    joint_states_topic: str | None = None
    task_id: int = 0
    task_name: str = ""
    split: str = "train"  # the task's split in the store's task table (train | test)
    episode_gap_s: float = 1.0  # a camera pause longer than this ends an episode
    marker_topic: str | None = None  # every message on it starts a new episode
    control_hz: float = 0.0  # 0: every camera frame is a tick
    image_size: int = 64
    crop: str = "center"
    state_names: list[str] | None = None  # default: the first joint state's names
    action_names: list[str] | None = None  # default: a0..a{A-1}
    action_low: list[float] | None = None  # default: the observed range
    action_high: list[float] | None = None
    action_type: str | None = None  # default: twist for Twist commands, joint_position otherwise
    robot: str = "robot"
    reward: str = "topic"  # topic | sparse-success | fn
    reward_topic: str | None = None
    success: list[bool] | None = None  # per-episode success, for sparse-success
    success_topic: str | None = None  # std_msgs/Bool; an episode succeeded if any True
    reward_fn: str | None = None  # module:function
    min_episode_length: int = 2
    bad_frames: str = "skip"  # skip: an undecodable image drops its row (counted); refuse: stop, naming it
    overwrite: bool = False
    zarr_format: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Tick:
    time: int  # the image's log time, ns (the receive side: commands, rewards)
    stamp: int  # the image's header stamp, ns (its log time if the header has none)
    state: np.ndarray
    action: np.ndarray
    command_time: int  # log time of the command that answers it
    log_time: bool = False  # image or joint state paired by log time (no header stamp)
    reward: float = 0.0


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def _open(bag: str):
    from rosbags.rosbag2 import Reader

    if not Path(bag).exists():
        raise FileNotFoundError(f"bag {bag} not found")
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as e:  # rosbags raises several types for a non-bag path
        raise ValueError(f"{bag}: not a readable rosbag2 ({type(e).__name__}: {e})") from None
    return reader


def _connection(reader, topic: str | None, allowed: Sequence[str], what: str, bag: str):
    if topic is None:
        return None
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        topics = sorted({c.topic for c in reader.connections})
        raise ValueError(f"{bag}: no topic {topic} ({what}); the bag has {', '.join(topics)}")
    if conns[0].msgtype not in allowed:
        raise ValueError(f"{bag}: {what} topic {topic} has type {conns[0].msgtype}; expected one of {allowed}")
    return conns


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def decode_image(msg, msgtype: str) -> tuple[np.ndarray, str]:
    """A deserialised Image/CompressedImage -> (uint8 array, encoding); ValueError if invalid."""
    if msgtype.endswith("CompressedImage"):
        try:
            return decode_compressed(np.asarray(msg.data, dtype=np.uint8))
        except ValueError as e:
            raise ValueError(f"compressed image ({msg.format}): {e}") from None
    enc = msg.encoding.lower()
    if enc not in _CHANNELS:
        raise ValueError(f"image encoding {msg.encoding!r} not supported ({', '.join(_CHANNELS)})")
    h, w, step, ch = int(msg.height), int(msg.width), int(msg.step), _CHANNELS[enc]
    if h <= 0 or w <= 0 or step < w * ch or len(msg.data) != step * h:
        raise ValueError(f"image {h}x{w} step {step} with {len(msg.data)} bytes is inconsistent")
    arr = np.asarray(msg.data, dtype=np.uint8).reshape(h, step)[:, : w * ch]
    return (arr if ch == 1 else arr.reshape(h, w, ch)), enc


def _command_values(msg, msgtype: str) -> tuple[np.ndarray, int | None]:
    if msgtype == "std_msgs/msg/Float64MultiArray":
        frame = None
        for d in msg.layout.dim:
            if d.label.startswith(FRAME_STAMP_LABEL):
                try:
                    frame = int(d.label[len(FRAME_STAMP_LABEL):]) or None
                except ValueError:
                    pass
        return np.asarray(msg.data, dtype=np.float64), frame
    t = msg.twist if msgtype.endswith("TwistStamped") else msg
    return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z]), None


def load_reward_fn(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--reward-fn {spec!r}: expected module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--reward-fn {spec!r}: cannot load ({e})") from None
    if not callable(fn):
        raise ValueError(f"--reward-fn {spec!r} is not callable")
    return fn


def import_bag(cfg: BagImportConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Import one bag into a (new or existing) store. Returns a summary dict."""
    log = log or (lambda m: print(m, file=sys.stderr))
    if cfg.reward not in ("topic", "sparse-success", "fn"):
        raise ValueError(f"reward source {cfg.reward!r}: use topic, sparse-success or fn")
    if cfg.reward == "topic" and not cfg.reward_topic:
        raise ValueError("reward source `topic` needs --reward-topic")
    if cfg.reward == "sparse-success" and cfg.success is None and not cfg.success_topic:
        raise ValueError("--reward sparse-success needs --success (per episode) or --success-topic")
    reward_fn: Callable[..., Any] | None = None
    if cfg.reward == "fn":
        if cfg.reward_fn is None:
            raise ValueError("reward source `fn` needs --reward-fn")
        reward_fn = load_reward_fn(cfg.reward_fn)
    typestore = _typestore()
    reader = _open(cfg.bag)
    try:
        image_conns = _connection(reader, cfg.image_topic, IMAGE_TYPES, "image", cfg.bag)
        cmd_conns = _connection(reader, cfg.command_topic, COMMAND_TYPES, "command", cfg.bag)
        js_conns = _connection(reader, cfg.joint_states_topic, ("sensor_msgs/msg/JointState",), "joint states", cfg.bag)
        rw_conns = _connection(reader, cfg.reward_topic if cfg.reward == "topic" else None, REWARD_TYPES,
                               "reward", cfg.bag)
        sc_conns = _connection(reader, cfg.success_topic, ("std_msgs/msg/Bool",), "success", cfg.bag)
        mk_conns = [c for c in reader.connections if cfg.marker_topic and c.topic == cfg.marker_topic]
        if cfg.marker_topic and not mk_conns:
            raise ValueError(f"{cfg.bag}: no marker topic {cfg.marker_topic}")
        plan = _plan(reader, typestore, cfg, image_conns, cmd_conns, js_conns, rw_conns, sc_conns, mk_conns, log)
        plan["bag_start_ns"] = int(reader.start_time)  # which recording: a path can be recorded again
        existed = Path(cfg.out).exists()
        if existed and not cfg.overwrite:
            plan = _without_imported(cfg, plan, log)
            if not plan["episodes"]:
                from learning.store import EpisodeStore

                return {"bag": str(cfg.bag), "out": str(cfg.out), "task_id": int(cfg.task_id),
                        "episodes_imported": 0, "rows": 0,
                        "episodes_in_store": EpisodeStore.open(cfg.out, load="lazy").n_episodes,
                        "episodes_already_in_store": plan["already"], "ticks_dropped": plan["dropped"],
                        "episodes_split": plan["n_split"], "frames_skipped": 0, "frames_skipped_per_episode": {},
                        "rows_log_time": 0}
        try:
            return _write(reader, typestore, cfg, image_conns, plan, reward_fn, log)
        except BaseException:
            if not existed and Path(cfg.out).exists():  # a failed import leaves no store behind
                shutil.rmtree(cfg.out, ignore_errors=True)
            raise
    finally:
        reader.close()


def _plan(reader, typestore, cfg, image_conns, cmd_conns, js_conns, rw_conns, sc_conns, mk_conns, log):
    """Pass 1: tick times, episodes, states, actions, rewards (images not decoded: only their
    headers are read). The pairing is `learning.alignment`'s, as recorder_node's and policy_node's."""
    small = [c for group in (cmd_conns, js_conns, rw_conns, sc_conns, mk_conns) if group for c in group]
    image_ids = {c.id for c in image_conns}
    image_log: list[int] = []  # log times (actions, rewards, markers: the receive side)
    image_stamps: list[int] = []  # header stamps, 0 where none (what a command names)
    commands: list[tuple[int, np.ndarray, int | None]] = []
    joints: list[tuple[int, int, Any]] = []  # (log time, header stamp, message)
    rewards: list[tuple[int, float]] = []
    successes: list[tuple[int, bool]] = []
    markers: list[int] = []
    for conn, t, raw in reader.messages(connections=list(image_conns) + small):
        if conn.id in image_ids:
            image_log.append(t)
            try:
                image_stamps.append(_ns(typestore.deserialize_cdr(raw, conn.msgtype).header.stamp))
            except Exception:  # noqa: BLE001 - an undeserialisable image: pass 2 names and skips it
                image_stamps.append(0)
            continue
        msg = typestore.deserialize_cdr(raw, conn.msgtype)
        if cmd_conns and conn in cmd_conns:
            values, frame = _command_values(msg, conn.msgtype)
            commands.append((t, values, frame))
        elif js_conns and conn in js_conns:
            joints.append((t, _ns(msg.header.stamp), msg))
        elif rw_conns and conn in rw_conns:
            rewards.append((t, float(msg.data)))
        elif sc_conns and conn in sc_conns:
            successes.append((t, bool(msg.data)))
        else:
            markers.append(t)
    if not image_log:
        raise ValueError(f"{cfg.bag}: no messages on {cfg.image_topic}")
    if not commands:
        raise ValueError(f"{cfg.bag}: no messages on {cfg.command_topic}")
    dims = {len(v) for _, v, _ in commands}
    if len(dims) != 1:
        raise ValueError(f"{cfg.bag}: commands on {cfg.command_topic} have varying lengths {sorted(dims)}")
    state_names = cfg.state_names
    if state_names is None:
        state_names = list(joints[0][2].name) if joints else []
    if not state_names:
        raise ValueError("no state: give --joint-states-topic (or --state-names)")

    # Frame times: header stamps, log time where an image has none.
    image_times, image_unstamped = zip(*(message_time(s, t) for s, t in zip(image_stamps, image_log, strict=True)),
                                       strict=True)
    # Joint states by timeline (a clock reset, as a simulator's, starts a new one whose stamps
    # must not pair with the old one's), in time order within each (a stable sort keeps the log
    # order of equal times).
    js_pairs = [message_time(s, t) for t, s, _ in joints]
    by_log = sorted(range(len(joints)), key=lambda k: joints[k][0])
    seg_by_log = np.array(clock_segments([js_pairs[k][0] for k in by_log]), dtype=np.int64)
    seg_of = dict(zip(by_log, seg_by_log.tolist(), strict=True))
    order = sorted(range(len(joints)), key=lambda k: (seg_of[k], js_pairs[k][0]))
    js_times = np.array([js_pairs[k][0] for k in order], dtype=np.int64)
    js_seg = np.array([seg_of[k] for k in order], dtype=np.int64)
    js_unstamped = [js_pairs[k][1] for k in order]
    js_msgs = [joints[k][2] for k in order]
    js_log = np.array([joints[k][0] for k in by_log], dtype=np.int64)
    newest_in_seg = np.zeros(len(by_log), dtype=np.int64)  # by log order: the newest stamp so far in its timeline
    for n, k in enumerate(by_log):
        fresh = n == 0 or seg_by_log[n] != seg_by_log[n - 1]
        newest_in_seg[n] = js_pairs[k][0] if fresh else max(int(newest_in_seg[n - 1]), js_pairs[k][0])

    def states_of(frames: list[int]) -> np.ndarray:
        """Index into js_* of each frame's state (-1: none): the newest stamped at or before
        the frame within the joint timeline current at its log time (the next one if the
        frame is already on it: the camera's clock reset before the joints' was logged)."""
        out = np.full(len(frames), -1, dtype=np.int64)
        if not len(js_times) or not frames:
            return out
        k = np.searchsorted(js_log, [image_log[i] for i in frames], side="right") - 1
        segs = np.where(k >= 0, seg_by_log[np.maximum(k, 0)], 0)
        if js_seg[-1] > 0:  # the joints' clock went back at least once
            for n, i in enumerate(frames):
                if k[n] >= 0 and segs[n] < js_seg[-1] and image_times[i] < newest_in_seg[k[n]] - CLOCK_BACK_NS:
                    segs[n] += 1
        for seg in np.unique(segs):
            lo, hi = np.searchsorted(js_seg, seg, side="left"), np.searchsorted(js_seg, seg, side="right")
            m = np.flatnonzero(segs == seg)
            j = newest_at_or_before_each(js_times[lo:hi], [image_times[frames[n]] for n in m])
            out[m] = np.where(j >= 0, j + lo, -1)
        return out
    image_clock = clock_segments(image_times)  # the camera's timelines: a reset starts an episode

    # Episode boundaries: camera gaps and markers; ticks thinned to the control rate.
    gap = int(cfg.episode_gap_s * 1e9)
    episodes: list[list[int]] = [[]]
    markers_left = sorted(markers)
    last_tick = None
    for i, t in enumerate(image_times):
        new = False
        if episodes[-1] and (t - image_times[i - 1] > gap or image_clock[i] != image_clock[i - 1]):
            new = True
        while markers_left and markers_left[0] <= image_log[i]:
            markers_left.pop(0)
            new = new or bool(episodes[-1])
        if new:
            episodes.append([])
            last_tick = None
        if not is_tick(t, last_tick, cfg.control_hz):
            continue  # thinned to the control rate
        episodes[-1].append(i)
        last_tick = t

    cmd_times = np.array([t for t, _, _ in commands], dtype=np.int64)
    if np.any(np.diff(cmd_times) < 0):  # a bag is read in log-time order; be safe all the same
        commands = [commands[k] for k in np.argsort(cmd_times, kind="stable")]
        cmd_times = np.sort(cmd_times, kind="stable")
    cmd_frames = [f for _, _, f in commands]
    plan = []
    dropped = 0
    for ep_index, frames in enumerate(episodes):
        ticks: list[tuple[int, _Tick]] = []
        end_t = image_log[frames[-1]] if frames else 0
        state_of = states_of(frames)
        action_of = first_answers([image_stamps[i] for i in frames], [image_log[i] for i in frames],
                                  cmd_frames, cmd_times, deadlines=[end_t + gap] * len(frames))
        for i, j, c in zip(frames, state_of, action_of, strict=True):
            t = image_log[i]
            if j < 0:
                dropped += 1
                continue
            try:
                state = _joint_values(js_msgs[j], state_names)
            except ValueError as e:
                log(f"tick at {t * 1e-9:.3f}s skipped: {e}")
                dropped += 1
                continue
            if c < 0:
                continue  # no command answers it (trailing ticks)
            ticks.append((i, _Tick(time=t, stamp=image_times[i], state=state, action=commands[c][1],
                                   command_time=int(cmd_times[c]),
                                   log_time=bool(image_unstamped[i] or js_unstamped[j]))))
        for n, (_, tk) in enumerate(ticks):
            # the rewards logged from the tick's command up to the next tick
            t_next = ticks[n + 1][1].time if n + 1 < len(ticks) else tk.time + gap
            c_t = tk.command_time
            tk.reward = float(sum(r for rt, r in rewards if c_t <= rt < max(t_next, c_t + 1)))
        success = None
        if cfg.success is not None:
            if ep_index < len(cfg.success):
                success = bool(cfg.success[ep_index])
        elif successes and frames:
            start_t = image_log[frames[0]]
            success = any(v for st, v in successes if start_t <= st <= end_t + gap)
        if len(ticks) < cfg.min_episode_length:
            dropped += len(ticks)
            continue
        plan.append({"ticks": ticks, "success": success, "index": ep_index})
    if cfg.success is not None and len(cfg.success) != len(episodes):
        raise ValueError(f"--success has {len(cfg.success)} values but the bag splits into "
                         f"{len(episodes)} episodes (gap {cfg.episode_gap_s}s)")
    if not plan:
        raise ValueError(f"{cfg.bag}: no episode with at least {cfg.min_episode_length} aligned ticks")
    A = dims.pop()
    all_actions = np.stack([tk.action for ep in plan for _, tk in ep["ticks"]])
    return {"episodes": plan, "state_names": state_names, "action_dim": A,
            "actions": all_actions, "dropped": dropped, "n_split": len(episodes)}


def bag_key(bag: str | Path) -> str:
    """How an episode's provenance names its bag (`bag`): the bag's absolute path."""
    return str(Path(bag).resolve())


def _without_imported(cfg: BagImportConfig, plan: dict, log) -> dict:
    """Appending: the bag's episodes that the store already holds (provenance `bag`,
    `bag_start_ns` and `bag_episode`, written by an earlier import of the same recording at the
    same path) are not imported again, so rerunning an interrupted batch with --append
    continues where it stopped. Another recording made later at the same path (its first
    message at another time) is imported whole."""
    from learning.store import EpisodeStore

    store = EpisodeStore.open(cfg.out, load="lazy")
    try:
        bags, indices = store.provenance("bag"), store.provenance("bag_episode")
    except KeyError:  # no episode of the store came from a bag
        return plan
    try:
        starts = store.provenance("bag_start_ns")
    except KeyError:  # imported before bag_start_ns was recorded: the path alone says
        starts = np.full(len(bags), -1, np.int64)
    key, start = bag_key(cfg.bag), int(plan["bag_start_ns"])
    same_path = [(int(s), int(i)) for b, s, i in zip(bags, starts, indices, strict=True) if b == key]
    done = {i for s, i in same_path if s in (-1, start)}
    if same_path and not done:
        log(f"{cfg.bag}: {cfg.out} holds episodes imported from this path before, of another recording "
            "(its first message at another time): this one is imported whole")
    keep = [ep for ep in plan["episodes"] if ep["index"] not in done]
    already = len(plan["episodes"]) - len(keep)
    if already:
        log(f"{cfg.bag}: {already} of its {len(plan['episodes'])} episodes are already in {cfg.out} "
            "(imported before from this path): not imported again")
    return {**plan, "episodes": keep, "already": already}


def _joint_values(msg, names: Sequence[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"joint state lacks {', '.join(missing)}")
    pos = np.asarray(msg.position, dtype=np.float64)
    if len(pos) != len(msg.name):
        raise ValueError("joint state has mismatched name/position lengths")
    out = pos[[index[n] for n in names]].astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise ValueError("joint state has a non-finite position")
    return out


def _spec(cfg: BagImportConfig, plan: dict, camera: dict) -> StoreSpec:
    A = plan["action_dim"]
    names = cfg.action_names or [f"a{i}" for i in range(A)]
    if len(names) != A:
        raise ValueError(f"--action-names has {len(names)} names but commands have {A} values")
    acts = plan["actions"]
    low = cfg.action_low or [float(x) - 1e-6 for x in acts.min(0)]
    high = cfg.action_high or [float(x) + 1e-6 for x in acts.max(0)]
    if cfg.action_type:
        action_type = cfg.action_type
    else:
        action_type = "twist" if "Twist" in camera.get("command_type", "") else "joint_position"
    reward_source: dict[str, Any] = {"type": cfg.reward}
    if cfg.reward == "topic":
        reward_source["topic"] = cfg.reward_topic
    elif cfg.reward == "sparse-success":
        reward_source["success_from"] = "command line" if cfg.success is not None else cfg.success_topic
    else:
        reward_source["function"] = cfg.reward_fn
    return StoreSpec(
        robot=cfg.robot, control_hz=float(cfg.control_hz) or camera["measured_hz"],
        image_size=int(cfg.image_size), state_names=list(plan["state_names"]), action_names=list(names),
        action_low=list(low), action_high=list(high), action_type=action_type,
        camera={k: v for k, v in camera.items() if k != "command_type"}, reward_source=reward_source,
        tasks=[{"id": int(cfg.task_id), "name": cfg.task_name or f"task {cfg.task_id}", "params": {},
                "split": cfg.split}],
        env={"source": "rosbag2 import", "bag": str(cfg.bag), **cfg.extra},
    )


RATE_TOLERANCE = 0.02  # measured camera rates of one robot differ by this much between bags


def _reuse_store_spec(cfg: BagImportConfig, spec: StoreSpec, plan: dict) -> StoreSpec:
    """Appending to an existing store: what the flags leave to the bag (action limits and
    names, the measured rate) comes from the store instead, so bags of one robot append with
    default options; a real disagreement is refused with the numbers."""
    import dataclasses

    from learning.store import EpisodeStore

    if not Path(cfg.out).exists():
        return spec
    stored = EpisodeStore.open(cfg.out, load="lazy").spec
    changes: dict[str, Any] = {"tasks": stored.tasks}
    if cfg.action_low is None and cfg.action_high is None:
        acts = plan["actions"]
        lo, hi = np.asarray(stored.action_low), np.asarray(stored.action_high)
        if acts.shape[1] == len(lo):
            out = (acts.min(0) < lo - 1e-6) | (acts.max(0) > hi + 1e-6)
            if out.any():
                raise ValueError(f"the bag's commands span {acts.min(0).round(4).tolist()} .. "
                                 f"{acts.max(0).round(4).tolist()}, outside {cfg.out}'s action limits "
                                 f"{stored.action_low} .. {stored.action_high}, which are fixed when a "
                                 "store is created: import every bag into a new store in one batch "
                                 "(`vmerpo import-bag BAG... --out NEW`), or create it with "
                                 "--action-low/--action-high wide enough for every bag (the robot's limits)")
            changes.update(action_low=list(stored.action_low), action_high=list(stored.action_high))
    if cfg.action_names is None and len(stored.action_names) == len(spec.action_names):
        changes["action_names"] = list(stored.action_names)
    if not cfg.control_hz:
        measured = float(spec.control_hz)
        if abs(measured - stored.control_hz) > RATE_TOLERANCE * stored.control_hz:
            raise ValueError(f"the bag's camera runs at {measured:.3f} Hz, {cfg.out} was recorded at "
                             f"{stored.control_hz:.3f} Hz (more than {RATE_TOLERANCE:.0%} apart): pass "
                             f"--control-hz {stored.control_hz:g} to thin it to the store's rate")
        changes["control_hz"] = stored.control_hz
    return dataclasses.replace(spec, **changes)


def _write(reader, typestore, cfg, image_conns, plan, reward_fn, log) -> dict[str, Any]:
    """Pass 2: decode the images that are rows, preprocess, stream episodes into the store."""
    want: dict[int, tuple[int, int]] = {}  # image index -> (episode, row)
    for e, ep in enumerate(plan["episodes"]):
        for r, (i, _) in enumerate(ep["ticks"]):
            want[i] = (e, r)
    images: dict[tuple[int, int], np.ndarray] = {}
    source_shape = None
    writer = None
    committed = []
    next_episode = 0
    msgtype = image_conns[0].msgtype
    skipped: set[tuple[int, int]] = set()  # undecodable frames (bad_frames skip)
    frames_skipped: dict[int, int] = {}  # per written episode
    log_time_rows = 0  # rows paired by log time (an image or joint state without a header stamp)
    index = -1
    for conn, t, raw in reader.messages(connections=list(image_conns)):
        index += 1
        if index not in want:
            continue
        e, r = want[index]
        try:
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            arr, enc = decode_image(msg, msgtype)
            image = to_model_image(arr, int(cfg.image_size), enc, crop=cfg.crop)
        except Exception as err:  # noqa: BLE001 - any undecodable frame: named, then skipped or refused
            where = f"image message {index} at log time {t * 1e-9:.3f} s (episode {e}, row {r})"
            if cfg.bad_frames == "refuse":
                raise ValueError(f"{cfg.bag}: {where} cannot be decoded ({err}); --bad-frames skip drops "
                                 "such frames") from None
            skipped.add((e, r))
            log(f"skipped {where}: {err}")
            continue
        source_shape = source_shape or list(arr.shape)
        images[(e, r)] = image
        if writer is None:
            hz = _tick_rate(plan)
            camera = {"topic": cfg.image_topic, "encoding": "rgb8", "source_encoding": enc,
                      "source_size": source_shape[:2], "crop": cfg.crop, "intrinsics": None,
                      "preprocess": preprocess_spec(int(cfg.image_size), cfg.crop),
                      "measured_hz": round(hz, 3), "command_type": reader.connections and
                      next(c.msgtype for c in reader.connections if c.topic == cfg.command_topic)}
            spec = _spec(cfg, plan, camera)
            if not cfg.overwrite:
                spec = _reuse_store_spec(cfg, spec, plan)
            writer = EpisodeWriter(cfg.out, spec, mode="w" if cfg.overwrite else "a",
                                   overwrite=cfg.overwrite, zarr_format=cfg.zarr_format, log=log)
            if writer.add_task(int(cfg.task_id), cfg.task_name or None, cfg.split):
                log(f"task {cfg.task_id} added to {cfg.out}'s task table ({cfg.split})")
        # Episodes are contiguous in time: write each one as soon as all its images are in.
        while next_episode < len(plan["episodes"]) and all(
                (next_episode, rr) in images or (next_episode, rr) in skipped
                for rr in range(len(plan["episodes"][next_episode]["ticks"]))):
            bad = sum((next_episode, rr) in skipped for rr in range(len(plan["episodes"][next_episode]["ticks"])))
            n, n_log = _write_episode(writer, cfg, plan, next_episode, images, reward_fn, skipped, log)
            if n:
                committed.append(n)
                log_time_rows += n_log
                frames_skipped[writer.n_episodes - 1] = bad
            for rr in range(len(plan["episodes"][next_episode]["ticks"])):
                images.pop((next_episode, rr), None)
            next_episode += 1
    if writer is None:
        raise ValueError(f"{cfg.bag}: no image could be decoded" + (f" ({len(skipped)} undecodable)" if skipped else ""))
    n_episodes = writer.n_episodes
    writer.close()
    if log_time_rows:
        log(f"{cfg.bag}: {log_time_rows} rows paired by bag log time (an image or joint state without a "
            "header stamp; provenance rows_log_time)")
    return {"bag": str(cfg.bag), "out": str(cfg.out), "task_id": int(cfg.task_id),
            "episodes_imported": len(committed), "rows": int(sum(committed)), "episodes_in_store": n_episodes,
            "episodes_already_in_store": plan.get("already", 0),
            "ticks_dropped": plan["dropped"], "episodes_split": plan["n_split"],
            "frames_skipped": len(skipped), "frames_skipped_per_episode": {str(k): v for k, v in frames_skipped.items()},
            "rows_log_time": int(log_time_rows)}


def _tick_rate(plan: dict) -> float:
    """Ticks per second within the episodes, by the image stamps (the pauses between episodes
    are not ticks: counting them made two bags of one camera measure different rates)."""
    n = span = 0
    for ep in plan["episodes"]:
        stamps = [tk.stamp for _, tk in ep["ticks"]]
        if len(stamps) > 1 and stamps[-1] > stamps[0]:
            n, span = n + len(stamps) - 1, span + stamps[-1] - stamps[0]
    return n / (span * 1e-9) if span else 30.0


def _write_episode(writer, cfg, plan, e, images, reward_fn, skipped=frozenset(), log=None) -> tuple[int, int]:
    """Episode e without its undecodable frames' rows: (rows written, of them paired by log
    time); (0, 0) (nothing written) if fewer than `min_episode_length` rows are left."""
    ep = plan["episodes"][e]
    rows = [r for r in range(len(ep["ticks"])) if (e, r) not in skipped]
    if len(rows) < max(1, cfg.min_episode_length):
        if log is not None:
            log(f"episode {ep['index']} of {cfg.bag} not imported: {len(rows)} decodable frames")
        return 0, 0
    ticks = [ep["ticks"][r][1] for r in rows]
    data = {
        "image": np.stack([images[(e, r)] for r in rows]),
        "state": np.stack([tk.state for tk in ticks]).astype(np.float32),
        "action": np.stack([tk.action for tk in ticks]).astype(np.float32),
        "terminal": np.zeros(len(ticks), bool),
        "timestamp": np.array([tk.stamp * 1e-9 for tk in ticks]),
    }
    n_log = sum(tk.log_time for tk in ticks)
    success = ep["success"]
    if cfg.reward == "topic":
        data["reward"] = np.array([tk.reward for tk in ticks], np.float32)
    elif cfg.reward == "sparse-success":
        data["reward"] = np.zeros(len(ticks), np.float32)
        data["reward"][-1] = 1.0 if success else 0.0
    else:
        rewards = np.asarray(reward_fn({k: v for k, v in data.items()}, success), dtype=np.float32).reshape(-1)
        if rewards.shape != (len(ticks),) or not np.all(np.isfinite(rewards)):
            raise ValueError(f"--reward-fn {cfg.reward_fn} returned shape {rewards.shape} (or NaN) "
                             f"for an episode of {len(ticks)} rows")
        data["reward"] = rewards
    writer.add_episode(data, task_id=int(cfg.task_id), success=bool(success),
                       provenance={"behavior": "rosbag2", "bag": bag_key(cfg.bag),
                                   "bag_start_ns": int(plan["bag_start_ns"]), "bag_episode": int(ep["index"]),
                                   "frames_skipped": len(ep["ticks"]) - len(rows), "rows_log_time": int(n_log)})
    return len(ticks), int(n_log)


# -- many bags into one store -------------------------------------------------------------------
BAG_SUFFIXES = (".mcap", ".db3")
MANIFEST_KEYS = ("bag", "task_id", "task_name", "split", "success")


def expand_bags(paths: Sequence[str | Path]) -> list[str]:
    """Bag paths from the command line: a rosbag2 directory (it has a metadata.yaml) or a
    .mcap/.db3 file is one bag; any other directory stands for the bags directly inside it
    (subdirectories with a metadata.yaml, .mcap and .db3 files), sorted by name."""
    out: list[str] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"bag {p} not found")
        if p.is_file() or (p / "metadata.yaml").exists():
            out.append(str(p))
            continue
        found = sorted(c for c in p.iterdir()
                       if (c.is_dir() and (c / "metadata.yaml").exists())
                       or (c.is_file() and c.suffix in BAG_SUFFIXES))
        if not found:
            raise ValueError(f"{p}: neither a rosbag2 (no metadata.yaml) nor a directory of bags (no "
                             f"subdirectory with a metadata.yaml, no {' or '.join(BAG_SUFFIXES)} file in it)")
        out.extend(str(c) for c in found)
    return out


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """A manifest: a YAML or JSON list of {bag, task_id, task_name?, split?, success?}
    entries, for bags of different tasks. A relative `bag` is relative to the manifest's
    directory; a directory of bags stands for each of them (with the entry's task). Returns
    one entry per bag, in order."""
    import json

    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest {p} not found") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"manifest {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                         f"{' '.join(str(e).split())}") from None
    form = "a list of {bag, task_id, task_name?, split?, success?} entries"
    if not isinstance(data, list) or not data:
        raise ValueError(f"manifest {p}: expected {form}, got {type(data).__name__}")
    entries = []
    for n, entry in enumerate(data):
        where = f"manifest {p}, entry {n}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping like {{bag: ..., task_id: ...}}, got {entry!r:.80}")
        unknown = sorted(set(map(str, entry)) - set(MANIFEST_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; an entry has {', '.join(MANIFEST_KEYS)}")
        if not isinstance(entry.get("bag"), str) or not entry["bag"]:
            raise ValueError(f"{where}: `bag` (a path) is required")
        task = entry.get("task_id")
        if not isinstance(task, int) or isinstance(task, bool) or task < 0:
            raise ValueError(f"{where}: `task_id` (an integer >= 0) is required, got {task!r}")
        name = entry.get("task_name", "")
        if not isinstance(name, str):
            raise ValueError(f"{where}: `task_name` must be a string, got {name!r}")
        split = entry.get("split", "train")
        if split not in ("train", "test"):
            raise ValueError(f"{where}: `split` must be train or test, got {split!r}")
        success = entry.get("success")
        if success is not None and not (isinstance(success, list)
                                        and all(isinstance(x, bool) or x in (0, 1) for x in success)):
            raise ValueError(f"{where}: `success` must be a list of per-episode true/false (1/0), got {success!r}")
        bag = Path(entry["bag"]) if Path(entry["bag"]).is_absolute() else p.parent / entry["bag"]
        for b in expand_bags([bag]):
            entries.append({"bag": b, "task_id": task, "task_name": name, "split": split,
                            "success": None if success is None else [bool(x) for x in success]})
    return entries


def _error_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    text = " ".join(text.split()) or type(e).__name__
    return text if isinstance(e, (ValueError, OSError, KeyError)) else f"{type(e).__name__}: {text}"


def import_bags(configs: Sequence[BagImportConfig], log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Import several bags into one store, one after the other: the first creates the store
    (or appends, or overwrites, as its config says), the others append with the store's
    limits, rate and spec. A store the batch creates without --action-low/--action-high gets
    the range of every bag's commands (not the first bag's only). Returns {"out", "bags":
    [per-bag summaries], "total"}.

    A bag that fails stops the batch with one line (ValueError) that names it, the bags
    imported before it and those not tried. The store is append-only: every episode committed
    before the failure stays (the earlier bags', and those of the failing bag written before
    it failed); rerunning with --append and the same bags continues, because episodes the
    store already holds from a bag path are skipped. A failure of the first bag into a new
    store leaves no store behind."""
    log = log or (lambda m: print(m, file=sys.stderr))
    import dataclasses

    from learning.store import EpisodeStore

    if not configs:
        raise ValueError("no bag to import")
    keys = [bag_key(c.bag) for c in configs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"bag {twice[0]} is listed twice")
    out = configs[0].out
    configs = list(configs)
    first = configs[0]
    if (len(configs) > 1 and (first.overwrite or not Path(out).exists())
            and first.action_low is None and first.action_high is None):
        # A new store's default limits are the observed range: of every bag, not the first's only
        # (later bags append within the store's limits, and the first bag is rarely the widest).
        span = _command_range(configs)
        if span is not None:
            configs[0] = dataclasses.replace(first, action_low=[float(x) - 1e-6 for x in span[0]],
                                             action_high=[float(x) + 1e-6 for x in span[1]])
            log(f"action limits of {out}: the commands' range over the {len(configs)} bags, "
                f"{np.round(span[0], 4).tolist()} .. {np.round(span[1], 4).tolist()}")
    summaries: list[dict[str, Any]] = []
    for n, cfg in enumerate(configs):
        if n:
            cfg = dataclasses.replace(cfg, overwrite=False)  # the first bag made the store
        log(f"[{n + 1}/{len(configs)}] {cfg.bag} (task {cfg.task_id}, {cfg.split})")
        exists = Path(out).exists()
        before = EpisodeStore.open(out, load="lazy").n_episodes if exists and not cfg.overwrite else 0
        try:
            summaries.append(import_bag(cfg, log=log))
        except Exception as e:
            if len(configs) == 1:
                raise
            done = [s["bag"] for s in summaries]
            rest = [c.bag for c in configs[n + 1:]]
            try:
                partial = EpisodeStore.open(out, load="lazy").n_episodes - before if Path(out).exists() else 0
            except Exception:  # noqa: BLE001 - only for the message
                partial = 0
            kept = []
            if done:
                kept.append(f"{len(done)} bag(s) imported before it stay in {out} ({_names(done)})")
            if partial:
                kept.append(f"{partial} of this bag's episodes stay in {out}")
            if kept:
                what = " and ".join(kept) + " (the store keeps every committed episode)"
            else:
                what = "nothing was imported" + ("" if Path(out).exists() else f" and {out} was not created")
            resume = (f"fix it and rerun with --append (not --overwrite) and the same bags: the bags' episodes "
                      f"already in {out} are skipped" if Path(out).exists() else "fix it and rerun")
            why = _error_line(e).removeprefix(f"{cfg.bag}: ")
            raise ValueError(f"bag {n + 1} of {len(configs)}, {cfg.bag}, failed: {why} -- {what}; "
                             + (f"not tried: {_names(rest)}; " if rest else "") + resume) from e
    total = {k: int(sum(s[k] for s in summaries))
             for k in ("episodes_imported", "rows", "frames_skipped", "ticks_dropped", "episodes_already_in_store",
                       "rows_log_time")}
    total["bags"] = len(summaries)
    total["episodes_in_store"] = summaries[-1]["episodes_in_store"]
    return {"out": str(out), "bags": summaries, "total": total}


def _command_range(configs: Sequence[BagImportConfig]) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) of every command in the bags, or None where they cannot say (a bag without
    the topic, commands of different lengths: the import itself names that)."""
    typestore = _typestore()
    low = high = None
    for cfg in configs:
        try:
            reader = _open(cfg.bag)
        except (OSError, ValueError):
            return None
        try:
            conns = _connection(reader, cfg.command_topic, COMMAND_TYPES, "command", cfg.bag)
            for conn, _, raw in reader.messages(connections=conns):
                values = _command_values(typestore.deserialize_cdr(raw, conn.msgtype), conn.msgtype)[0]
                if low is None or high is None:
                    low, high = values.copy(), values.copy()
                elif values.shape != low.shape:
                    return None
                else:
                    np.minimum(low, values, out=low)
                    np.maximum(high, values, out=high)
        except ValueError:
            return None
        finally:
            reader.close()
    return None if low is None or high is None else (low, high)


def _names(bags: Sequence[str], most: int = 6) -> str:
    shown = [str(b) for b in bags[:most]]
    return ", ".join(shown) + (f" and {len(bags) - most} more" if len(bags) > most else "")


def format_batch_summary(result: dict[str, Any]) -> str:
    """The batch import's one summary: a line per bag, then the totals."""
    rows = [(s["bag"], str(s["task_id"]), str(s["episodes_imported"]), str(s["rows"]), str(s["frames_skipped"]),
             str(s["ticks_dropped"]), str(s["episodes_already_in_store"]), str(s["rows_log_time"]))
            for s in result["bags"]]
    t = result["total"]
    rows.append((f"total ({t['bags']} bags)", "", str(t["episodes_imported"]), str(t["rows"]),
                 str(t["frames_skipped"]), str(t["ticks_dropped"]), str(t["episodes_already_in_store"]),
                 str(t["rows_log_time"])))
    head = ("bag", "task", "episodes", "frames", "skipped frames", "dropped ticks", "already in store",
            "log-time rows")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths, strict=True)))
    lines = [f"imported {t['episodes_imported']} episodes ({t['rows']} frames) from {t['bags']} bags into "
             f"{result['out']} ({t['episodes_in_store']} episodes in the store)", fmt(head)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)
