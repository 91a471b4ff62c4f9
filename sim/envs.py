"""Image-based manipulation task families in MuJoCo.

A *family* is one manipulation skill (`push-v3`); its *tasks* are variants of it (goal and
object positions), identified by an integer task id. The task table and its split into
meta-train and held-out tasks are fixed (Meta-World's ML1 goals drawn with `TASK_SEED`) and
written into every store the family produces.

An environment gives, per control tick, an RGB camera image (through the project's one
preprocessing function) and the robot's proprioceptive state, takes a continuous action with
known limits, and reports reward and success. Episodes are capped at `max_episode_steps`
control ticks; `action_repeat` applies each action for several simulator steps.

Importing this module imports MuJoCo; `sim/__init__.py` stays light.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
# Mesa llvmpipe rasterises in the calling thread: measured 4.4 vs 5.9 CPU ms per 64 px frame
# with its default thread pool, and one core per collection worker is what scales (vmerpo bench sim).
os.environ.setdefault("LP_NUM_THREADS", "0")

import functools  # noqa: E402
import pickle  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, cast  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from learning.runtime.safety import SafetyLimiter  # noqa: E402
from perception.preprocess import preprocess_spec, to_model_image  # noqa: E402

SUPPORTED_IMAGE_SIZES = (64, 84, 128)
DEFAULT_IMAGE_SIZE = 64
DEFAULT_MAX_EPISODE_STEPS = 150  # Meta-World's 500 is mostly hovering after success
TASK_SEED = 0  # seeds ML1's goal sampling: the task table never changes
N_TRAIN_TASKS = 40  # ids 0..39: ML1 train goals 0..39 (meta-train)
N_TEST_TASKS = 10  # ids 40..49: ML1 test goals 0..9 (held out)
ACTION_SCALE_M = 0.01  # Meta-World moves the mocap by action * 1 cm per control step
# The image is the only place the goal appears: a sphere of 3.5 cm radius in bright green covers
# ~4x4 px at 64 px, seen by the world model's encoder (a site: no physics, rendering only).
GOAL_MARKER_RADIUS_M = 0.035
GOAL_MARKER_RGBA = (0.1, 1.0, 0.1, 1.0)
# Option `goal_pin`: a dark-green pin from the table up to the marker and a disc where it stands.
# One camera sees the marker's 2-D position only, and along the camera ray reach goals spread
# more than the 5 cm success radius: a least-squares fit of the 3-D goal from the marker's pixel
# position is off by 4.1 cm on the held-out goals (2.5 cm with its pixel size too); with the
# pin's foot on the table it is 1.2 cm (experiments/08-goal-pin). Rendering only.
GOAL_PIN_RADIUS_M = 0.008
GOAL_PIN_FOOT_RADIUS_M = 0.035
GOAL_PIN_RGBA = (0.0, 0.45, 0.0, 1.0)
TABLE_TOP_Z_M = 0.0  # Meta-World's table surface (world z)


@dataclass(frozen=True)
class CameraSpec:
    """A free MuJoCo camera aimed at the task (upright by construction: world z is up)."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float  # degrees; -90 looks along -y (from the far side of the table)
    elevation: float  # degrees, negative looks down
    fovy: float = 45.0  # Meta-World's model default (vis.global.fovy)

    def as_dict(self) -> dict[str, Any]:
        return {"lookat": list(self.lookat), "distance": self.distance,
                "azimuth": self.azimuth, "elevation": self.elevation, "fovy": self.fovy}


@dataclass(frozen=True)
class FamilySpec:
    name: str  # Meta-World env name
    camera: CameraSpec
    rand_vec_meaning: str  # what ML1's per-task random vector holds
    max_rate: float | None = 1.0  # safety limiter rate limit per control step, action units
    notes: str = ""
    goal_marker: bool = False  # draw the goal site as a GOAL_MARKER sphere (the goal is the task)


# A three-quarter view from the far right corner of the table sees the robot, the table and
# every object; door-open is watched from the robot's side, where the door's handle faces.
_TABLE_VIEW = CameraSpec(lookat=(0.0, 0.7, 0.15), distance=1.1, azimuth=-145.0, elevation=-40.0)
FAMILIES: dict[str, FamilySpec] = {
    "reach-v3": FamilySpec(
        "reach-v3", _TABLE_VIEW, "object xyz (3), goal xyz (3)", goal_marker=True,
        notes="tasks differ by goal position; Meta-World's 2 cm dark-red goal site is about one "
              "pixel at 64 px, so it is drawn as a bright 3.5 cm sphere (rendering only)",
    ),
    "push-v3": FamilySpec("push-v3", _TABLE_VIEW, "puck xyz (3), goal xyz (3)", goal_marker=True),
    "drawer-close-v3": FamilySpec("drawer-close-v3", _TABLE_VIEW, "drawer xyz (3)"),
    "door-open-v3": FamilySpec(
        "door-open-v3",
        CameraSpec(lookat=(-0.05, 0.62, 0.15), distance=1.3, azimuth=125.0, elevation=-38.0),
        "door xyz (3)",
    ),
}

STATE_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_opening"] + [f"right_j{i}" for i in range(7)]
ACTION_NAMES = ["ee_dx", "ee_dy", "ee_dz", "gripper_effort"]


def check_family(family: str) -> FamilySpec:
    if family not in FAMILIES:
        raise ValueError(f"unknown env {family!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def check_image_size(size: int) -> int:
    if int(size) not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(
            f"image size {size} not supported; choose one of "
            f"{', '.join(str(s) for s in SUPPORTED_IMAGE_SIZES)}"
        )
    return int(size)


MAX_HAND_INIT_NOISE_M = 0.1  # +-10 cm per axis: Meta-World's own start-position ranges are of this size


def check_goal_pin(family: str, goal_pin: bool) -> bool:
    """`goal_pin` needs a family that draws a goal marker; returns it as a bool."""
    if goal_pin and not check_family(family).goal_marker:
        raise ValueError(f"goal pin: {family} draws no goal marker to stand a pin under (families with "
                         "one: " + ", ".join(f for f, spec in FAMILIES.items() if spec.goal_marker) + ")")
    return bool(goal_pin)


def check_hand_init_noise(noise: float) -> float:
    noise = float(noise)
    if not (0.0 <= noise <= MAX_HAND_INIT_NOISE_M):
        raise ValueError(f"hand start noise {noise:g} m not supported; choose 0 (Meta-World's fixed start) "
                         f"to {MAX_HAND_INIT_NOISE_M:g} m")
    return noise


@dataclass
class TaskSet:
    """A family's task table: ids, names, params and split, plus the Meta-World tasks."""

    family: str
    table: list[dict[str, Any]]  # [{"id", "name", "params", "split"}], as in the store
    mw_tasks: list[Any] = field(repr=False)  # metaworld.types.Task per id (picklable)

    @property
    def ids(self) -> list[int]:
        return [t["id"] for t in self.table]

    def split_ids(self, split: str) -> list[int]:
        return [t["id"] for t in self.table if t["split"] == split]

    def check_id(self, task_id: int) -> int:
        if not 0 <= int(task_id) < len(self.table):
            raise ValueError(
                f"task id {task_id} out of range for {self.family} (0..{len(self.table) - 1})"
            )
        return int(task_id)

    def select(self, spec: str | int | list[int]) -> list[int]:
        """`train`, `test`, `all`, a count N (the first N meta-train tasks) or a list of ids."""
        if isinstance(spec, list):
            return [self.check_id(i) for i in spec]
        text = str(spec).strip()
        if text in ("train", "test"):
            return self.split_ids(text)
        if text == "all":
            return self.ids
        try:
            if "," in text or text.startswith("["):
                ids = [int(x) for x in text.strip("[]").split(",") if x.strip()]
            else:
                n = int(text)
        except ValueError:
            raise ValueError(
                f"--tasks {text!r}: expected train, test, all, a count or a list of ids like 0,3,7"
            ) from None
        if "," in text or text.startswith("["):
            return [self.check_id(i) for i in ids]
        train = self.split_ids("train")
        if not 1 <= n <= len(train):
            raise ValueError(f"--tasks {n}: a count of meta-train tasks, and {self.family} has {len(train)}; "
                             f"for task {n} alone write '{n},'")
        return train[:n]


@functools.cache
def task_set(family: str) -> TaskSet:
    """The family's fixed task table (ML1 goals with seed TASK_SEED; ~2 s, cached)."""
    check_family(family)
    import metaworld

    ml1 = metaworld.ML1(family, seed=TASK_SEED)
    picked = [("train", i, t) for i, t in enumerate(ml1.train_tasks[:N_TRAIN_TASKS])]
    picked += [("test", i, t) for i, t in enumerate(ml1.test_tasks[:N_TEST_TASKS])]
    table, tasks = [], []
    for task_id, (split, ml1_index, task) in enumerate(picked):
        rand_vec = np.asarray(pickle.loads(task.data)["rand_vec"], dtype=np.float64)
        table.append({
            "id": task_id,
            "name": f"{family}/{task_id}",
            "split": split,
            "params": {
                "rand_vec": [round(float(x), 6) for x in rand_vec],
                "rand_vec_meaning": FAMILIES[family].rand_vec_meaning,
                "ml1": {"seed": TASK_SEED + (split == "test"), "set": split, "index": ml1_index},
            },
        })
        tasks.append(task)
    return TaskSet(family, table, tasks)


RENDER_MESH_CELL_M = 0.008  # vertex-clustering cell for render meshes (~1 px at 128 px)


def _fast_render_settings(model: mujoco.MjModel) -> None:
    # Shadows, multisampling and reflections cost most of llvmpipe's time: 64 px frames go
    # from ~8 to ~130 per second on one core (docs/environment.md).
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.mat_reflectance[:] = 0.0
    _simplify_render_meshes(model, RENDER_MESH_CELL_M)


# Families whose Meta-World observation holds one geom's orientation, which Meta-World computes
# each step with scipy's Rotation.from_matrix(...).as_quat(): a quarter of a state-only step's
# time. `_quat_like_scipy` is the same algorithm (Markley's, the same branch and sign, (x, y, z, w)
# order) without scipy's per-call overhead: equal to scipy's to 1 ulp (tests/sim/test_envs.py).
# The patches are closures on the env instance: such an env is not picklable (nothing pickles one).
QUAT_GEOMS = {"reach-v3": "objGeom", "push-v3": "objGeom", "door-open-v3": "handle"}


def _quat_like_scipy(m: np.ndarray) -> np.ndarray:
    """The unit quaternion (x, y, z, w) of rotation matrix `m`, as scipy's Rotation.from_matrix
    followed by as_quat() returns it: of the four candidates, the one built on the largest of
    (m00, m11, m22, trace), with the component it is built on positive (no other sign rule)."""
    m = np.asarray(m, dtype=np.float64).reshape(3, 3)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    decision = (m[0, 0], m[1, 1], m[2, 2], tr)
    choice = int(np.argmax(decision))
    q = np.empty(4)
    if choice != 3:
        i, j, k = choice, (choice + 1) % 3, (choice + 2) % 3
        q[i] = 1.0 - tr + 2.0 * m[i, i]
        q[j] = m[j, i] + m[i, j]
        q[k] = m[k, i] + m[i, k]
        q[3] = m[k, j] - m[j, k]
    else:
        q[0] = m[2, 1] - m[1, 2]
        q[1] = m[0, 2] - m[2, 0]
        q[2] = m[1, 0] - m[0, 1]
        q[3] = 1.0 + tr
    return q / np.linalg.norm(q)


def _use_fast_quat(mw: Any, geom: str) -> None:
    """Give Meta-World env `mw` the scipy-free `_get_quat_objects` of `geom` (same values)."""
    gid = mw.model.geom(geom).id

    def quat() -> np.ndarray:
        return _quat_like_scipy(mw.data.geom_xmat[gid])

    mw._get_quat_objects = quat


def _use_fast_obs(mw: Any) -> None:
    """Give Meta-World env `mw` a `_get_curr_obs_combined_no_goal` with the same values and
    arithmetic (hand position, finger gap / 0.1 clipped to [0, 1], each object's position and
    quaternion, zero-padded) without its per-step name lookups, splits and stacks: with the
    quaternion, a third of a state-only step. Tested against Meta-World's own on every family
    (bit for bit given the quaternion; with scipy's quaternion to 1 ulp)."""
    d, model = mw.data, mw.model
    hand, right, left = (model.body(n).id for n in ("hand", "rightclaw", "leftclaw"))
    size = 4 + mw._obs_obj_max_len

    def obs() -> np.ndarray:
        out = np.zeros(size)
        out[:3] = d.xpos[hand]
        out[3] = np.clip(np.linalg.norm(d.xpos[right] - d.xpos[left]) / 0.1, 0.0, 1.0)
        pos, quat = mw._get_pos_objects(), mw._get_quat_objects()
        for i in range(len(pos) // 3):
            out[4 + 7 * i:7 + 7 * i] = pos[3 * i:3 * i + 3]
            out[7 + 7 * i:11 + 7 * i] = quat[4 * i:4 * i + 4]
        return out

    mw._get_curr_obs_combined_no_goal = obs


def _draw_goal_marker(model: mujoco.MjModel) -> None:
    gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    if gid >= 0:
        model.site_size[gid, 0] = GOAL_MARKER_RADIUS_M
        model.site_rgba[gid] = GOAL_MARKER_RGBA


def _simplify_render_meshes(model: mujoco.MjModel, cell: float) -> tuple[int, int]:
    """Vertex-cluster the Sawyer's meshes (67k triangles) for drawing: what remains of the
    render time after the quality settings is vertex work on them. Only the triangle lists
    change; collisions use the compiled convex hulls, so physics is bit-identical (tested).
    Must run before the renderer uploads the meshes. Returns (triangles before, after)."""
    before = after = 0
    for mid in range(model.nmesh):
        va, vn = model.mesh_vertadr[mid], model.mesh_vertnum[mid]
        fa, fn = model.mesh_faceadr[mid], model.mesh_facenum[mid]
        faces = model.mesh_face[fa:fa + fn].copy()
        key = np.floor(model.mesh_vert[va:va + vn] / cell).astype(np.int64)
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        merged = first[inverse.reshape(-1)][faces]  # each vertex -> its cluster's first vertex
        keep = ((merged[:, 0] != merged[:, 1]) & (merged[:, 1] != merged[:, 2])
                & (merged[:, 0] != merged[:, 2]))
        _, unique = np.unique(np.sort(merged[keep], axis=1), axis=0, return_index=True)
        idx = np.flatnonzero(keep)[np.sort(unique)]
        if len(idx) == 0 or len(idx) >= fn:
            before, after = before + fn, after + fn
            continue
        k = len(idx)
        model.mesh_face[fa:fa + k] = merged[idx]
        model.mesh_facenormal[fa:fa + k] = model.mesh_facenormal[fa:fa + fn][idx].copy()
        if model.mesh_texcoordnum[mid] > 0:
            model.mesh_facetexcoord[fa:fa + k] = model.mesh_facetexcoord[fa:fa + fn][idx].copy()
        model.mesh_facenum[mid] = k
        before, after = before + fn, after + k
    return before, after


class MetaWorldImageEnv:
    """One Meta-World family as an image-based task family.

    Observation: {"image": uint8 [S,S,3] RGB, "state": float32 [11] (STATE_NAMES)}.
    Action: float32 [4] in [-1, 1]: end-effector position delta (x 1 cm per simulator step)
    and gripper effort (-1 open, +1 close). Reward: Meta-World's dense reward, summed over
    the repeated steps. Success: Meta-World's success flag. No true terminations (time
    limits only), so `terminated` is always False.
    """

    def __init__(
        self,
        family: str,
        image_size: int = DEFAULT_IMAGE_SIZE,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        action_repeat: int = 1,
        tasks: TaskSet | None = None,
        hand_init_noise: float = 0.0,
        goal_pin: bool = False,
        render: bool = True,
    ) -> None:
        self.family_spec = check_family(family)
        self.family = family
        self.image_size = check_image_size(image_size)
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be at least 1, got {max_episode_steps}")
        if int(action_repeat) < 1:
            raise ValueError(f"action_repeat must be at least 1, got {action_repeat}")
        self.max_episode_steps = int(max_episode_steps)
        self.action_repeat = int(action_repeat)
        self.tasks = tasks if tasks is not None else task_set(family)
        self.hand_init_noise = check_hand_init_noise(hand_init_noise)
        self.goal_pin = check_goal_pin(family, goal_pin)
        # False: observations carry the state only (no image is rendered), for state-only
        # learners and evaluations; the simulation, and so every state, action and reward, is
        # the same as with images
        self.renders = bool(render)

        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self._mw = ALL_V3_ENVIRONMENTS[family]()
        self._mw.max_path_length = self.max_episode_steps * self.action_repeat + 1
        self._hand_init = np.array(self._mw.hand_init_pos, dtype=np.float64)  # Meta-World's fixed start
        if family in QUAT_GEOMS:
            _use_fast_quat(self._mw, QUAT_GEOMS[family])
        _use_fast_obs(self._mw)
        self._reset_rng = np.random.default_rng(0)  # start offsets of reset() calls without a seed
        self.hand_start = self._hand_init.copy()  # where the current episode's hand started
        _fast_render_settings(self._mw.model)
        if self.family_spec.goal_marker:
            _draw_goal_marker(self._mw.model)
        self._renderer: mujoco.Renderer | None = None
        cam = self.family_spec.camera
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.lookat[:] = cam.lookat
        self.camera.distance = cam.distance
        self.camera.azimuth = cam.azimuth
        self.camera.elevation = cam.elevation
        self._mw.model.vis.global_.fovy = cam.fovy

        self.action_low = np.full(4, -1.0, dtype=np.float32)
        self.action_high = np.full(4, 1.0, dtype=np.float32)
        self.hold_action = np.zeros(4, dtype=np.float32)
        self.task_id: int | None = None
        self._t = 0
        self._raw_obs: np.ndarray | None = None

    # -- facts about the environment ----------------------------------------------------
    @property
    def model(self) -> mujoco.MjModel:
        return self._mw.model

    @property
    def data(self) -> mujoco.MjData:
        return self._mw.data

    @property
    def sim_dt(self) -> float:
        """Seconds per simulator step (Meta-World's frame_skip x timestep = 12.5 ms)."""
        return float(self._mw.model.opt.timestep * self._mw.frame_skip)

    @property
    def control_dt(self) -> float:
        return self.sim_dt * self.action_repeat

    @property
    def control_hz(self) -> float:
        return round(1.0 / self.control_dt, 6)  # 80 Hz, not 79.99999999999999

    @property
    def state_names(self) -> list[str]:
        return list(STATE_NAMES)

    @property
    def action_names(self) -> list[str]:
        return list(ACTION_NAMES)

    @property
    def workspace_low(self) -> np.ndarray:
        return np.asarray(self._mw.mocap_low, dtype=np.float64)

    @property
    def workspace_high(self) -> np.ndarray:
        return np.asarray(self._mw.mocap_high, dtype=np.float64)

    def safety_limiter(self) -> SafetyLimiter:
        """The project's one safety limiter, configured for this environment."""
        return SafetyLimiter(
            low=self.action_low, high=self.action_high,
            max_delta=self.family_spec.max_rate,
            workspace_low=self.workspace_low, workspace_high=self.workspace_high,
            position_channels=(0, 1, 2), position_scale=ACTION_SCALE_M * self.action_repeat,
            hold_action=self.hold_action,
        )

    def env_config(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "suite": "metaworld",
            "max_episode_steps": self.max_episode_steps,
            "action_repeat": self.action_repeat,
            "sim_dt": self.sim_dt,
            "task_seed": TASK_SEED,
            "hand_init_noise_m": self.hand_init_noise,
            "n_train_tasks": len(self.tasks.split_ids("train")),
            "n_test_tasks": len(self.tasks.split_ids("test")),
            "workspace_low": self.workspace_low.tolist(),
            "workspace_high": self.workspace_high.tolist(),
            "safety": {"max_delta": self.family_spec.max_rate,
                       "position_scale": ACTION_SCALE_M * self.action_repeat},
            "render": {"shadows": False, "multisampling": False, "reflections": False,
                       "goal_marker": ({"radius_m": GOAL_MARKER_RADIUS_M, "rgba": list(GOAL_MARKER_RGBA)}
                                       if self.family_spec.goal_marker else None),
                       "goal_pin": ({"radius_m": GOAL_PIN_RADIUS_M, "foot_radius_m": GOAL_PIN_FOOT_RADIUS_M,
                                     "rgba": list(GOAL_PIN_RGBA)} if self.goal_pin else None)},
            "notes": self.family_spec.notes,
        }

    def store_spec(self, extra_env: dict[str, Any] | None = None):
        from learning.store import StoreSpec

        return StoreSpec(
            robot="sawyer (metaworld)",
            control_hz=self.control_hz,
            image_size=self.image_size,
            camera={"name": f"free:{self.family}", "crop": "center", "encoding": "rgb8",
                    "intrinsics": None, "pose": self.family_spec.camera.as_dict(),
                    "preprocess": preprocess_spec(self.image_size)},
            state_names=self.state_names,
            action_names=self.action_names,
            action_low=self.action_low.tolist(),
            action_high=self.action_high.tolist(),
            action_type="ee_delta",
            action_units=f"end-effector position delta, {ACTION_SCALE_M} m per unit per "
            "simulator step (mocap); gripper effort -1 open .. +1 close",
            action_frame="world",
            gripper_channel=3,
            hold_action=self.hold_action.tolist(),
            reward_source={"type": "simulator", "detail": "metaworld dense reward (v3), "
                           "summed over action repeats"},
            tasks=[dict(t) for t in self.tasks.table],
            env={**self.env_config(), **(extra_env or {})},
        )

    # -- episode ------------------------------------------------------------------------
    def set_task(self, task_id: int) -> None:
        task_id = self.tasks.check_id(task_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._mw.set_task(self.tasks.mw_tasks[task_id])
        self.task_id = task_id

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start an episode of the current task. With `hand_init_noise` > 0 the hand starts at
        Meta-World's fixed position plus an offset drawn uniformly from +-hand_init_noise per
        axis by `seed` (the episode seed: same seed, same start), kept inside the mocap
        workspace; the task (goal, object) does not change. Without noise the episode depends
        on the task only, as in Meta-World."""
        if self.task_id is None:
            raise RuntimeError("call set_task(task_id) before reset()")
        if self.hand_init_noise > 0:
            rng = self._reset_rng if seed is None else np.random.default_rng([int(seed), 0x4A4D])
            offset = rng.uniform(-self.hand_init_noise, self.hand_init_noise, 3)
            low, high = self.workspace_low + 0.01, self.workspace_high - 0.01
            self._mw.hand_init_pos = np.clip(self._hand_init + offset, low, high)
        self.hand_start = np.array(self._mw.hand_init_pos, dtype=np.float64)
        # A full reset of MuJoCo's data (solver warm start included) makes an episode depend
        # on its task and actions only, not on what this process simulated before.
        mujoco.mj_resetData(self._mw.model, self._mw.data)
        self._mw._did_see_sim_exception = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw, _ = self._mw.reset()
        self._raw_obs = raw
        self._t = 0
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        if self._raw_obs is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 4 finite numbers, got {action!r}")
        reward, success = 0.0, False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(self.action_repeat):
                raw, r, _, _, info = self._mw.step(action)
                reward += float(r)
                success = success or bool(info.get("success", 0.0))
        self._raw_obs = raw
        self._t += 1
        truncated = self._t >= self.max_episode_steps
        return self._observation(), reward, False, truncated, {"success": success}

    def ee_position(self) -> np.ndarray:
        return np.array(self._mw.get_endeff_pos(), dtype=np.float64)

    def tool_centre(self) -> np.ndarray:
        """The point between the fingers, where Meta-World measures reach success."""
        return np.array(self._mw.tcp_center, dtype=np.float64)

    def goal_position(self) -> np.ndarray:
        """The current task's goal (world frame, metres): privileged, never recorded."""
        return np.array(self._mw._target_pos, dtype=np.float64)

    def goal_distance(self) -> float:
        """Distance from the tool centre to the goal (m): Meta-World's reach success is < 5 cm."""
        return float(np.linalg.norm(self.tool_centre() - self.goal_position()))

    def privileged_observation(self) -> np.ndarray:
        """Meta-World's full 39-d state with the goal: for scripted experts only, never
        recorded (the recorded observation does not contain the goal)."""
        obs = np.array(self._raw_obs, dtype=np.float64)
        obs[-3:] = self._mw._target_pos
        return obs

    def render(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self._mw.model, self.image_size, self.image_size)
        self._renderer.update_scene(self._mw.data, camera=self.camera)
        if self.goal_pin:
            self._add_goal_pin(self._renderer.scene)
        return to_model_image(self._renderer.render(), self.image_size)

    def _add_goal_pin(self, scene: mujoco.MjvScene) -> None:
        """The pin and its foot as two extra scene geoms (drawn, never simulated)."""
        if scene.ngeom + 2 > scene.maxgeom:
            raise RuntimeError("goal_pin: the renderer's scene has no room for two more geoms")
        x, y, z = (float(v) for v in cast(np.ndarray, self._mw._target_pos))
        top = max(z - GOAL_MARKER_RADIUS_M, TABLE_TOP_Z_M + 1e-3)
        half = (top - TABLE_TOP_Z_M) / 2
        rgba = np.array(GOAL_PIN_RGBA, dtype=np.float32)
        for size, centre_z in (((GOAL_PIN_RADIUS_M, half, 0.0), TABLE_TOP_Z_M + half),
                               ((GOAL_PIN_FOOT_RADIUS_M, 0.002, 0.0), TABLE_TOP_Z_M + 0.002)):
            mujoco.mjv_initGeom(scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_CYLINDER,
                                np.array(size, dtype=np.float64), np.array([x, y, centre_z]),
                                np.eye(3).ravel(), rgba)
            scene.ngeom += 1

    def _state(self) -> np.ndarray:
        qpos = self._mw.data.qpos
        assert self._raw_obs is not None  # set by reset() and step()
        return np.concatenate([self._raw_obs[:4], qpos[:7]]).astype(np.float32)

    def _observation(self) -> dict[str, np.ndarray]:
        if not self.renders:
            return {"state": self._state()}
        return {"image": self.render(), "state": self._state()}

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._mw.close()


def make_env(
    family: str,
    image_size: int = DEFAULT_IMAGE_SIZE,
    max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
    action_repeat: int = 1,
    tasks: TaskSet | None = None,
    hand_init_noise: float = 0.0,
    goal_pin: bool = False,
    render: bool = True,
) -> MetaWorldImageEnv:
    return MetaWorldImageEnv(family, image_size, max_episode_steps, action_repeat, tasks, hand_init_noise,
                             goal_pin, render)


def goal_pin_of(env_config: dict[str, Any] | None) -> bool:
    """Whether a store's or policy's environment config was rendered with the goal pin
    (configs written before the option existed: no pin)."""
    return bool(((env_config or {}).get("render") or {}).get("goal_pin"))


def check_policy_goal_pin(policy_env_config: dict[str, Any] | None, goal_pin: bool) -> None:
    """Refuse to run a policy on the other rendering than its logs had (with or without the pin)."""
    trained = goal_pin_of(policy_env_config)
    if trained != bool(goal_pin):
        word = "with" if trained else "without"
        raise ValueError(f"this policy was trained on images {word} the goal pin: evaluate it {word} --goal-pin")
