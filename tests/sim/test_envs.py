"""Task families: images upright, tasks distinguishable, errors named, physics untouched."""

from __future__ import annotations

import numpy as np
import pytest

from sim.envs import (
    FAMILIES,
    N_TEST_TASKS,
    N_TRAIN_TASKS,
    SUPPORTED_IMAGE_SIZES,
    make_env,
    task_set,
)

ISSUE_FAMILIES = ["reach-v3", "push-v3", "drawer-close-v3", "door-open-v3"]


@pytest.fixture(scope="module")
def envs():
    made = {f: make_env(f) for f in ISSUE_FAMILIES}
    yield made
    for e in made.values():
        e.close()


def test_issue_families_exist_with_fixed_split():
    for fam in ISSUE_FAMILIES:
        assert fam in FAMILIES
        ts = task_set(fam)
        assert len(ts.split_ids("train")) == N_TRAIN_TASKS
        assert len(ts.split_ids("test")) == N_TEST_TASKS
        assert set(ts.split_ids("train")).isdisjoint(ts.split_ids("test"))
        rand = [tuple(t["params"]["rand_vec"]) for t in ts.table]
        assert len(set(rand)) == len(rand), "every task is a different variant"
    # fixed: rebuilt from scratch, the table is the same (ML1 goals with a fixed seed)
    task_set.cache_clear()
    again = task_set("push-v3").table
    task_set.cache_clear()
    assert again == task_set("push-v3").table


def _hand_rows(env, image_size):
    """Mean image row of the gripper's pixels, from a segmentation render of the env camera."""
    import mujoco

    m = env.model
    hand_bodies = {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)
                   for n in ("hand", "rightclaw", "leftclaw", "rightpad", "leftpad")}
    hand_geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] in hand_bodies]
    r = mujoco.Renderer(m, image_size, image_size)
    r.enable_segmentation_rendering()
    r.update_scene(env.data, camera=env.camera)
    seg = r.render()
    r.close()
    mask = np.isin(seg[:, :, 0], hand_geoms) & (seg[:, :, 1] == int(mujoco.mjtObj.mjOBJ_GEOM))
    assert mask.sum() > 0, "gripper not visible"
    return np.nonzero(mask)[0].mean()


@pytest.mark.parametrize("family", ISSUE_FAMILIES)
def test_images_are_upright(envs, family):
    env = envs[family]
    env.set_task(0)
    env.reset()
    for _ in range(25):  # lift the gripper 25 cm... (clipped by the workspace)
        env.step(np.array([0.0, 0.0, 1.0, 0.0], np.float32))
    up = _hand_rows(env, env.image_size)
    for _ in range(25):
        obs, *_ = env.step(np.array([0.0, 0.0, -1.0, 0.0], np.float32))
    down = _hand_rows(env, env.image_size)
    # Upright: the world's up is the image's up (smaller row index).
    assert up < down - 2, (up, down)
    # ... and the recorded image is that render, unflipped: it equals the RGB render
    import mujoco

    r = mujoco.Renderer(env.model, env.image_size, env.image_size)
    r.update_scene(env.data, camera=env.camera)
    np.testing.assert_array_equal(env.render(), r.render())
    r.close()
    # table (brown wood) fills the bottom of the frame, not the top
    img = obs["image"].astype(np.int32)
    wood = (img[:, :, 0] > img[:, :, 2] + 20) & (img[:, :, 0] < 200)
    assert wood[-16:].mean() > wood[:16].mean()


@pytest.mark.parametrize("family", ISSUE_FAMILIES)
def test_tasks_give_different_observations_where_they_should(envs, family):
    env = envs[family]
    ts = env.tasks
    first = {}
    for task_id in (0, 1, ts.split_ids("test")[0]):
        env.set_task(task_id)
        first[task_id] = env.reset()
    a, b, c = first[0], first[1], first[ts.split_ids("test")[0]]
    # the robot starts in the same pose for every task: proprioception is the same
    np.testing.assert_allclose(a["state"], b["state"], atol=1e-6)
    # the scene differs (object / goal / drawer / door position): the image shows which task
    for other in (b, c):
        diff = np.abs(a["image"].astype(int) - other["image"].astype(int)).max(axis=2)
        assert (diff > 30).sum() >= 3, "tasks look identical"
    # same task, after other episodes: exactly the same first observation
    env.set_task(0)
    for _ in range(5):
        env.step(np.ones(4, np.float32))
    again = env.reset()
    np.testing.assert_array_equal(again["image"], a["image"])
    np.testing.assert_array_equal(again["state"], a["state"])


def test_observation_and_action_contract(envs):
    env = envs["push-v3"]
    env.set_task(3)
    obs = env.reset()
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (len(env.state_names),) and obs["state"].dtype == np.float32
    assert env.action_low.shape == env.action_high.shape == (4,)
    assert env.control_hz == 80.0
    steps = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        steps += 1
        assert not terminated and isinstance(info["success"], bool) and np.isfinite(reward)
        if truncated:
            break
    assert steps == env.max_episode_steps == 150
    # goal is not part of the recorded observation
    goal = env._mw._target_pos
    assert not np.any(np.all(np.isclose(obs["state"][None, :3], goal, atol=1e-3), axis=1))


@pytest.mark.parametrize("size", [84, 128])
def test_other_image_sizes(size):
    env = make_env("reach-v3", image_size=size, max_episode_steps=3, action_repeat=2)
    env.set_task(0)
    obs = env.reset()
    assert obs["image"].shape == (size, size, 3)
    assert env.control_hz == 40.0
    spec = env.store_spec()
    assert spec.image_size == size and spec.env["action_repeat"] == 2
    assert spec.env["max_episode_steps"] == 3
    env.close()


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"unknown env 'rech-v3'; choose one of reach-v3"):
        make_env("rech-v3")
    with pytest.raises(ValueError, match="image size 100 not supported"):
        make_env("reach-v3", image_size=100)
    assert 64 in SUPPORTED_IMAGE_SIZES
    ts = task_set("reach-v3")
    with pytest.raises(ValueError, match=r"task id 50 out of range for reach-v3 \(0..49\)"):
        ts.select("3,50")
    assert ts.select("train") == list(range(40)) and ts.select("test") == list(range(40, 50))
    assert ts.select("3") == [0, 1, 2] and ts.select("4,41") == [4, 41]
    # a held-out id given as a count says how to ask for that one task
    with pytest.raises(ValueError, match=r"--tasks 41: a count of meta-train tasks.*has 40; for task 41 alone write '41,'"):
        ts.select("41")
    assert ts.select("41,") == [41]


def test_render_mesh_simplification_leaves_physics_unchanged(monkeypatch):
    import sim.envs as E

    def rollout():
        env = E.make_env("push-v3", max_episode_steps=40)
        env.render = lambda: np.zeros((64, 64, 3), np.uint8)
        env.set_task(2)
        env.reset()
        rng = np.random.default_rng(0)
        states = [env.step(rng.uniform(-1, 1, 4).astype(np.float32))[0]["state"]
                  for _ in range(40)]
        qpos = env.data.qpos.copy()
        env.close()
        return np.stack(states), qpos

    simplified = rollout()
    monkeypatch.setattr(E, "_simplify_render_meshes", lambda model, cell: (0, 0))
    full = rollout()
    np.testing.assert_array_equal(simplified[0], full[0])
    np.testing.assert_array_equal(simplified[1], full[1])


def test_hand_init_noise_draws_the_start_from_the_episode_seed():
    """Random hand starts: a function of the seed (same seed, same start and frames), inside
    +-noise per axis, goal unchanged; noise 0 keeps Meta-World's fixed start whatever the seed."""
    env = make_env("reach-v3", hand_init_noise=0.05)
    fixed = make_env("reach-v3")
    try:
        env.set_task(41)
        fixed.set_task(41)
        a = env.reset(seed=7)
        start_a, goal_a = env.hand_start.copy(), env.privileged_observation()[-3:].copy()
        b = env.reset(seed=7)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["state"], b["state"])
        starts = []
        for seed in range(8):
            env.reset(seed=seed)
            starts.append(env.hand_start.copy())
            np.testing.assert_array_equal(env.privileged_observation()[-3:], goal_a)  # same task
        starts = np.array(starts)
        base = np.array(fixed._hand_init)
        assert np.all(np.abs(starts - base) <= 0.05 + 1e-12)
        assert len({tuple(s) for s in starts.round(6)}) == 8, "every seed draws its own start"
        assert np.abs(starts - base).max() > 0.02
        # the hand is where the draw put it (the tool moves there during Meta-World's reset)
        c = env.reset(seed=3)
        assert np.linalg.norm(c["state"][:3] - env.hand_start) < 0.02
        assert np.linalg.norm(c["state"][:3] - start_a) > 1e-3
        # no noise: the seed changes nothing
        f0, f1 = fixed.reset(seed=0), fixed.reset(seed=1)
        np.testing.assert_array_equal(f0["state"], f1["state"])
        np.testing.assert_array_equal(fixed.hand_start, base)
        assert env.env_config()["hand_init_noise_m"] == 0.05 and fixed.env_config()["hand_init_noise_m"] == 0.0
    finally:
        env.close()
        fixed.close()
    with pytest.raises(ValueError, match=r"hand start noise 0.5 m not supported; choose 0"):
        make_env("reach-v3", hand_init_noise=0.5)
    with pytest.raises(ValueError, match=r"hand start noise -0.01 m not supported"):
        make_env("reach-v3", hand_init_noise=-0.01)


def test_goal_pin_draws_a_pin_under_the_goal_marker_and_nothing_else():
    """The pin option changes the image only below the goal marker (the pin and its foot, in
    the pin's colour), never the physics, and is recorded in the env config; families without
    a goal marker refuse it."""
    from sim.envs import GOAL_PIN_RGBA, goal_pin_of

    pinned, plain = make_env("reach-v3", goal_pin=True), make_env("reach-v3")
    try:
        for task in (0, 41):  # goal heights 18 cm and 27 cm above the table
            pinned.set_task(task)
            plain.set_task(task)
            a, b = pinned.reset(), plain.reset()
            np.testing.assert_array_equal(a["state"], b["state"])
            changed = np.abs(a["image"].astype(int) - b["image"].astype(int)).sum(-1) > 0
            assert changed.sum() >= 8, f"task {task}: the pin changed only {changed.sum()} pixels"
            pin_rgb = np.array(GOAL_PIN_RGBA[:3]) * 255
            # changed pixels are dark green (lighting shades them, the hue stays green)
            px = a["image"][changed].astype(int)
            assert np.all(px[:, 1] > px[:, 0] + 20) and np.all(px[:, 1] > px[:, 2] + 20), px[:5]
            assert np.abs(px.mean(0) - pin_rgb).max() < 80
            # all of them lie below the bright-green marker (image rows grow downwards)
            marker = (b["image"][..., 1] > 180) & (b["image"][..., 0] < 120)
            rows = np.nonzero(changed)[0]
            assert rows.min() >= np.nonzero(marker)[0].mean(), "the pin stands under the marker"
            for _ in range(3):  # the physics is unchanged
                a, *_ = pinned.step(np.array([0.5, -0.3, 0.2, 0.0], np.float32))
                b, *_ = plain.step(np.array([0.5, -0.3, 0.2, 0.0], np.float32))
                np.testing.assert_array_equal(a["state"], b["state"])
        assert goal_pin_of(pinned.env_config()) and not goal_pin_of(plain.env_config())
        assert not goal_pin_of({}) and not goal_pin_of({"render": {"goal_pin": None}})
    finally:
        pinned.close()
        plain.close()
    with pytest.raises(ValueError, match=r"goal pin: drawer-close-v3 draws no goal marker"):
        make_env("drawer-close-v3", goal_pin=True)


def test_fast_object_quaternion_is_scipys():
    """`_quat_like_scipy` (Meta-World's object quaternion without scipy's per-call cost) returns
    what Rotation.from_matrix(...).as_quat() does: on random rotations, on each branch of the
    algorithm, and on push's puck (it turns) and the door's handle along rollouts."""
    from scipy.spatial.transform import Rotation

    import sim.envs as E

    rots = Rotation.random(500, random_state=0)
    # each branch: identity (trace), and half-turns about x, y, z (one diagonal entry largest)
    mats = [*rots.as_matrix(), np.eye(3), *(Rotation.from_rotvec(np.pi * np.eye(3)[i]).as_matrix() for i in range(3))]
    for m in mats:
        np.testing.assert_allclose(E._quat_like_scipy(m), Rotation.from_matrix(m).as_quat(), atol=1e-12)
    for family in ("push-v3", "door-open-v3", "reach-v3"):
        env = E.make_env(family, max_episode_steps=60, render=False)
        geom = E.QUAT_GEOMS[family]
        assert env._mw._get_quat_objects.__qualname__.startswith("_use_fast_quat")  # in use
        env.set_task(3)
        env.reset(seed=1)
        rng = np.random.default_rng(0)
        seen = []
        for _ in range(60):
            env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            fast = env._mw._get_quat_objects()
            ref = Rotation.from_matrix(env._mw.data.geom(geom).xmat.reshape(3, 3)).as_quat()
            np.testing.assert_allclose(fast, ref, atol=1e-12)
            np.testing.assert_allclose(env._raw_obs[7:11], ref, atol=1e-12)  # what the observation holds
            seen.append(fast)
        env.close()
        assert np.all(np.isfinite(seen))


@pytest.mark.parametrize("family", ISSUE_FAMILIES)
def test_fast_observation_is_meta_worlds(family):
    """`_use_fast_obs`: the same observation as Meta-World's own method along a random rollout
    (the hand, the finger gap, every object's position and quaternion): bit for bit given the
    same quaternion, and to 1e-12 against Meta-World's own with scipy's quaternion."""
    import sim.envs as E

    env = E.make_env(family, max_episode_steps=50, render=False)
    mw = env._mw
    assert mw._get_curr_obs_combined_no_goal.__qualname__.startswith("_use_fast_obs")  # in use
    env.set_task(2)
    env.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(50):
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        fast = mw._get_curr_obs_combined_no_goal()
        np.testing.assert_array_equal(fast, type(mw)._get_curr_obs_combined_no_goal(mw))
        patched = mw.__dict__.pop("_get_quat_objects", None)  # Meta-World's own, scipy's quaternion
        try:
            np.testing.assert_allclose(fast, type(mw)._get_curr_obs_combined_no_goal(mw), rtol=0, atol=1e-12)
        finally:
            if patched is not None:
                mw._get_quat_objects = patched
    env.close()
