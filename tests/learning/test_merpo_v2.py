"""MerPO v2 on tiny data: the task embedding, the conditioned meta-policy, the behaviour term,
and what happens with a log that says nothing about its task."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from learning.merpo import Normalizer
from learning.merpo_v2 import Imagination, MerPOv2, MerPOv2Config
from learning.rac import RAC, RACConfig
from learning.task_embedding import NoTaskSignal, TaskEmbedding, TaskEmbeddingConfig, goal_probe

# a point mass on a plane: s' = s + 0.2 a; each task's reward is -|s' - goal|
GOALS = {n: np.array([np.cos(2 * np.pi * n / 8), np.sin(2 * np.pi * n / 8)], np.float32) for n in range(8)}


def task_log(goal: np.ndarray, episodes: int = 6, steps: int = 20, seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs, act, nxt = [], [], []
    for _ in range(episodes):
        s = rng.uniform(-1.5, 1.5, 2).astype(np.float32)
        for _ in range(steps):
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            s2 = np.clip(s + 0.2 * a, -2, 2)
            obs.append(s)
            act.append(a)
            nxt.append(s2)
            s = s2
    o, a, n = (torch.from_numpy(np.stack(x)) for x in (obs, act, nxt))
    rew = -torch.linalg.norm(n - torch.from_numpy(goal), dim=-1)
    data = {"obs": o, "act": a, "rew": (rew - rew.mean()) / 0.5, "next_obs": n, "done": torch.zeros(len(o))}
    return data, np.arange(1, episodes + 1) * steps


EMB = TaskEmbeddingConfig(dim=3, hidden=64, fit_steps=1500, batch=256, infer_steps=300, members=4)


@pytest.fixture(scope="module")
def fitted():
    logs = {n: task_log(GOALS[n], seed=n) for n in GOALS}
    te = TaskEmbedding(2, 2, list(GOALS), EMB)
    te.fit({n: d for n, (d, _) in logs.items()})
    return te, logs


def test_a_meta_train_tasks_embedding_is_recovered_from_its_own_log(fitted):
    te, logs = fitted
    train = te.train_embeddings()
    Z = np.stack([train[n] for n in GOALS])
    W, b = goal_probe(Z, np.stack(list(GOALS.values())))
    hits = 0
    for n in GOALS:
        fresh, ends = task_log(GOALS[n], seed=100 + n)  # another log of the same task
        inf = te.infer(fresh, ends, seed=n)
        placed = inf.mean @ W + b
        hits += int(np.argmin([np.linalg.norm(placed - g) for g in GOALS.values()])) == n
        assert inf.members.shape == (EMB.members, EMB.dim) and (inf.std >= 0).all()
        # the goal it places (through the meta-train probe) is nearer the true goal than the
        # nearest other task's goal is (neighbouring goals are 0.77 apart)
        assert np.linalg.norm(inf.mean @ W + b - GOALS[n]) < 0.4, n
    assert hits == 8, f"{hits}/8 tasks placed nearest their own goal"


def test_the_evidence_is_high_when_the_log_pins_the_task_and_low_when_its_rewards_are_noise(fitted):
    te, _ = fitted
    for n in (1, 5):
        fresh, ends = task_log(GOALS[n], seed=200 + n)
        inf = te.infer(fresh, ends, seed=n)
        # unseen episodes' rewards: the inferred embedding's error is far below the mean task's
        assert inf.evidence is not None and inf.evidence > 0.5, (n, inf.evidence)
    fresh, ends = task_log(GOALS[1], seed=300)
    noise = dict(fresh, rew=torch.from_numpy(np.random.default_rng(0).normal(size=len(fresh["rew"])).astype(np.float32)))
    inf = te.infer(noise, ends, seed=1)
    assert inf.evidence is not None and inf.evidence < 0.2, inf.evidence
    assert te.infer(fresh, None, seed=1).evidence is None  # no episodes, no out-of-bag episodes


def test_a_log_with_constant_rewards_is_refused_by_inference_and_falls_back_in_merpo(fitted):
    te, logs = fitted
    data, ends = logs[0]
    flat = dict(data, rew=torch.full_like(data["rew"], 0.3))
    with pytest.raises(NoTaskSignal, match="constant.*nothing to infer the task from"):
        te.infer(flat, ends)
    m = MerPOv2(2, 2, list(GOALS), MerPOv2Config(rac=RACConfig(hidden=16, layers=1), embedding=EMB))
    m.embedding = te
    inf = m.infer(flat, ends)
    assert inf.fallback is not None and "mean task" in inf.fallback and "\n" not in inf.fallback
    assert np.array_equal(inf.z, np.zeros(EMB.dim, np.float32))


def test_the_meta_policys_action_changes_with_the_task_embedding():
    logs = {n: task_log(GOALS[n], episodes=4, seed=n) for n in range(4)}
    cfg = MerPOv2Config(rac=RACConfig(hidden=32, layers=2, batch_real=64, batch_model=64, cql_n_actions=2,
                                      behaviour_weight="advantage"),
                        embedding=dataclasses.replace(EMB, fit_steps=600, infer_steps=100, members=2),
                        warm_start_steps=100, meta_steps=300, adapt_steps=20, train_inference_draws=2,
                        train_inference_episodes=2)
    m = MerPOv2(2, 2, list(logs), cfg)
    m.fit({n: d for n, (d, _) in logs.items()}, {n: e for n, (_, e) in logs.items()})
    s = np.zeros((1, 2), np.float32)
    acts = []
    for n in range(4):
        x = torch.from_numpy(m.policy_input(s, m.train_inferences[n]))
        with torch.no_grad():
            acts.append(m.meta_actor.mean_unit(x).numpy()[0])
    spread = max(np.linalg.norm(a - b) for a in acts for b in acts)
    assert spread > 0.05, f"pi_c's mean action at one state moves by only {spread:.3f} across the tasks"
    racs = m.adapt([logs[0][0]], [m.train_inferences[0]], [0])
    assert racs[0].actor.net[0].in_features == 2 + EMB.dim  # the adapted policy is conditioned too
    assert len(m.train_inferences[0].members) == 2 * 2  # two 2-episode subsets x 2 members


def test_the_advantage_weighted_behaviour_term_lets_the_critic_move_the_mean_action():
    """Data actions uniform in [-1, 1]; a critic that prefers a = +0.6. Under the plain
    likelihood term at MerPO's lambda the policy stays at the data's mean; the advantage-weighted
    term moves it towards what the critic prefers."""
    torch.manual_seed(0)
    n = 512
    real = {"obs": torch.zeros(n, 1), "act": torch.rand(n, 1) * 2 - 1, "rew": torch.zeros(n),
            "next_obs": torch.zeros(n, 1), "done": torch.zeros(n)}
    means = {}
    for weight in ("nll", "advantage"):
        cfg = RACConfig(hidden=32, layers=2, batch_real=n, lam=50.0, omega=1.0, behaviour_weight=weight, awr_beta=2.0)
        rac = RAC(1, 1, cfg, seed=1)
        opt = torch.optim.Adam(rac.critic.parameters(), lr=1e-2)
        for _ in range(300):  # the critic: Q(s, a) = -(a - 0.6)^2 on both heads
            a = torch.rand(256, 1) * 2 - 1
            q1, q2 = rac.critic(torch.zeros(256, 1), a)
            loss = ((q1 + (a[:, 0] - 0.6) ** 2) ** 2).mean() + ((q2 + (a[:, 0] - 0.6) ** 2) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for _ in range(300):
            rac._actor_step(real, None, 1.0)
        with torch.no_grad():
            means[weight] = float(rac.actor.mean_unit(torch.zeros(1, 1)))
    assert abs(means["nll"]) < 0.15, means  # pinned to the data's mean action
    assert means["advantage"] - means["nll"] > 0.2, means


def test_a_checkpoint_from_before_v2_is_refused_naming_the_version():
    m = MerPOv2(2, 2, [0, 1], MerPOv2Config(rac=RACConfig(hidden=8, layers=1), embedding=EMB))
    with pytest.raises(ValueError, match="MerPO v1 checkpoint: this is MerPO v2"):
        m.load_state_dict({"meta_actor": {}, "meta_critic": {}})
    with torch.no_grad():
        for p in m.meta_actor.parameters():
            p.add_(1.0)
    sd = m.state_dict()
    other = MerPOv2(2, 2, [0, 1], MerPOv2Config(rac=RACConfig(hidden=8, layers=1), embedding=EMB))
    assert not torch.equal(next(m.meta_actor.parameters()), next(other.meta_actor.parameters()))
    other.load_state_dict(sd)
    for p, q in zip(m.meta_actor.parameters(), other.meta_actor.parameters(), strict=True):
        assert torch.equal(p, q)


def _small_world_model():
    from perception.world_model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(image_size=32, input_size=64, cnn_depth=4, deter=16, stoch=6, hidden=16,
                                       reward_hidden=16, ensemble=3, action_dim=2))


def _imagination_setup():
    """A small world model, its latent width, a normaliser, a 2-task embedding and 256 real rows
    ([latent, embedding] obs, unit actions)."""
    wm = _small_world_model()
    F = 6 + 16
    norm = Normalizer(np.full(2, -1.0, np.float32), np.ones(2, np.float32))
    te = TaskEmbedding(F, 2, [0, 1], TaskEmbeddingConfig(dim=2, hidden=16, layers=1))
    g = torch.Generator().manual_seed(0)
    data = {"obs": torch.randn(256, F + 2, generator=g), "act": torch.rand(256, 2, generator=g) * 2 - 1}
    return wm, F, norm, te, data


def test_the_uncertainty_penalty_lowers_imagined_rewards_where_members_disagree():
    """Imagined transitions from a world model: reward r_hat(s, a, s', e) minus lambda_u times
    the members' disagreement (in its std on real rows); where the members agree, nothing."""
    import copy

    wm, F, norm, te, data = _imagination_setup()
    im = Imagination(wm, norm, F, horizon=3)
    assert im.calibrate(data) > 0
    start = data["obs"][:64]

    def imagined(penalty: float, model) -> dict[str, torch.Tensor]:
        im.world_model = model
        rac = RAC(F + 2, 2, RACConfig(hidden=16, layers=1, horizon=3, uncertainty_penalty=penalty), seed=1)
        rac.refresh_rollouts(start, im.rollout_fn(te, torch.Generator().manual_seed(2)))
        return rac.model_buffer.data

    free, penalised = imagined(0.0, wm), imagined(2.0, wm)
    torch.testing.assert_close(free["obs"], penalised["obs"])  # the same imagined transitions
    u = (free["rew"] - penalised["rew"]) / 2.0
    assert len(u) == 64 * 3 and (u > 0).all()  # random members disagree everywhere
    # every imagined row carries its start row's task embedding
    torch.testing.assert_close(free["obs"][:, F:], start[:, F:].repeat_interleave(3, 0))
    torch.testing.assert_close(free["next_obs"][:, F:], start[:, F:].repeat_interleave(3, 0))
    agreeing = copy.deepcopy(wm)
    with torch.no_grad():
        for p in (agreeing.heads.prior_w1, agreeing.heads.prior_b1, agreeing.heads.prior_w2, agreeing.heads.prior_b2):
            p[:, 1:] = p[:, :1]
    free, penalised = imagined(0.0, agreeing), imagined(2.0, agreeing)
    torch.testing.assert_close(free["rew"], penalised["rew"], atol=1e-5, rtol=0)


def test_with_a_quantile_the_penalty_acts_only_on_disagreement_above_the_real_rows():
    """`uncertainty_quantile` q: the penalised u is the disagreement (in its std on real rows)
    less the real rows' q-quantile, floored at 0; the whole disagreement is still reported. The
    reference travels with the checkpoint to adaptation; a quantile outside [0, 1) is refused."""
    wm, F, norm, te, data = _imagination_setup()
    whole, excess = Imagination(wm, norm, F, horizon=3), Imagination(wm, norm, F, horizon=3)
    assert whole.calibrate(data, seed=4) == excess.calibrate(data, seed=4, quantile=0.9)  # the same unit
    assert whole.uncertainty_reference == 0.0
    assert excess.uncertainty_reference > whole.real_uncertainty_mean > 0  # the 90th percentile, above the mean
    start = data["obs"][:64]
    a = whole.rollout_fn(te, torch.Generator().manual_seed(2))(start, lambda o: torch.zeros(len(o), 2))
    b = excess.rollout_fn(te, torch.Generator().manual_seed(2))(start, lambda o: torch.zeros(len(o), 2))
    torch.testing.assert_close(a["uncertainty"], a["raw_uncertainty"])
    torch.testing.assert_close(b["raw_uncertainty"], a["raw_uncertainty"])
    torch.testing.assert_close(b["uncertainty"], (a["uncertainty"] - excess.uncertainty_reference).clamp_min(0))
    below = a["raw_uncertainty"] <= excess.uncertainty_reference
    assert below.any() and (~below).any()  # some imagined steps are free, others still cost
    assert (b["uncertainty"][below] == 0).all() and (b["uncertainty"][~below] > 0).all()
    # meta-training records the reference; the checkpoint carries it to adaptation
    cfg = MerPOv2Config(rac=RACConfig(hidden=16, layers=1, horizon=2, rollout_batch=8),
                        embedding=TaskEmbeddingConfig(dim=2, hidden=16, fit_steps=5, infer_steps=5, members=2),
                        warm_start_steps=2, meta_steps=2, uncertainty_quantile=0.9)
    datas = {n: {"obs": data["obs"][:120, :F], "act": data["act"][:120], "rew": data["act"][:120, 0] * (n - 0.5),
                 "next_obs": data["obs"][1:121, :F], "done": torch.zeros(120)} for n in (0, 1)}
    m = MerPOv2(F, 2, [0, 1], cfg)
    stats = m.fit(datas, imagination=Imagination(wm, norm, F, 2))
    assert stats["uncertainty_reference"] > stats["real_uncertainty"] > 0
    assert stats["imagined_raw_uncertainty"] >= stats["imagined_uncertainty"] >= 0
    loaded = MerPOv2(F, 2, [0, 1], cfg)
    loaded.load_state_dict(m.state_dict())
    loaded.attach(Imagination(wm, norm, F, 2), loaded.trained_uncertainty_std, loaded.trained_uncertainty_reference)
    assert loaded.imagination is not None
    assert loaded.imagination.uncertainty_reference == stats["uncertainty_reference"]
    before = {k: v for k, v in m.state_dict().items() if k != "uncertainty_reference"}  # written before the option
    old = MerPOv2(F, 2, [0, 1], cfg)
    old.load_state_dict(before)
    assert old.trained_uncertainty_reference == 0.0  # all of u, as such a checkpoint was trained
    for q in (-0.1, 1.0):
        with pytest.raises(ValueError, match="uncertainty_quantile"):
            MerPOv2Config(uncertainty_quantile=q)


def test_meta_training_with_a_world_model_imagines_and_adaptation_does_too():
    wm = _small_world_model()
    F = 6 + 16
    norm = Normalizer(np.full(2, -1.0, np.float32), np.ones(2, np.float32))
    g = torch.Generator().manual_seed(3)
    datas, ends = {}, {}
    for n in range(3):
        obs, nxt = torch.randn(120, F, generator=g), torch.randn(120, F, generator=g)
        act = torch.rand(120, 2, generator=g) * 2 - 1
        rew = act[:, 0] * (1.0 if n % 2 else -1.0) + 0.1 * n
        datas[n] = {"obs": obs, "act": act, "rew": rew, "next_obs": nxt, "done": torch.zeros(120)}
        ends[n] = np.arange(1, 7) * 20
    cfg = MerPOv2Config(rac=RACConfig(behaviour_weight="advantage", hidden=32, layers=1, horizon=2,
                                      uncertainty_penalty=1.0, rollout_every=5, rollout_batch=32),
                        embedding=TaskEmbeddingConfig(dim=2, hidden=32, fit_steps=100, infer_steps=30, members=2),
                        warm_start_steps=20, meta_steps=20, adapt_steps=10)
    m = MerPOv2(F, 2, [0, 1, 2], cfg)
    stats = m.fit(datas, ends, imagination=Imagination(wm, norm, F, cfg.rac.horizon))
    assert stats["uncertainty_std"] > 0 and stats["imagined_uncertainty"] > 0
    # the per-update callback (vmerpo train's curves) sees every update and changes nothing
    seen: list[tuple[int, dict]] = []
    watched = MerPOv2(F, 2, [0, 1, 2], cfg)
    watched.fit(datas, ends, imagination=Imagination(wm, norm, F, cfg.rac.horizon),
                on_step=lambda i, st: seen.append((i, st)))
    assert [i for i, _ in seen] == list(range(1, 21))
    assert {"q", "conservative_gap", "behaviour_nll", "imagined_uncertainty"} <= set(seen[-1][1])
    for (k, a), b in zip(m.meta_actor.state_dict().items(), watched.meta_actor.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    sd = m.state_dict()
    assert sd["uncertainty_std"] == stats["uncertainty_std"]
    loaded = MerPOv2(F, 2, [0, 1, 2], cfg)
    loaded.load_state_dict(sd)
    loaded.attach(Imagination(wm, norm, F, cfg.rac.horizon), loaded.trained_uncertainty_std)
    inf = loaded.infer(datas[1], ends[1])
    rac = loaded.adapt([datas[1]], [inf], [0])[0]
    assert len(rac.model_buffer) == 2 * 32 * 2  # refreshed at steps 0 and 5, horizon 2
    off = MerPOv2(F, 2, [0, 1, 2], dataclasses.replace(cfg, imagine=False))
    assert "imagined_uncertainty" not in off.fit(datas, ends, imagination=Imagination(wm, norm, F, 2))


def test_the_solved_log_rule_lets_the_meta_policy_lead_unless_the_log_already_solves_the_task():
    from learning.merpo_v2 import choose_omega

    rule = MerPOv2Config(omega=0.4, omega_rule="solved-log")
    assert choose_omega(rule, 1.0)[0] == 0.4  # every episode succeeded: the data lead
    assert choose_omega(rule, 0.8)[0] == 0.0  # otherwise the meta-policy at the inferred task leads
    assert choose_omega(rule, None)[0] == 0.4 and "no episode success" in choose_omega(rule, None)[1]
    assert choose_omega(MerPOv2Config(omega=0.4), 0.0)[0] == 0.4  # "fixed" (the default) never moves
    with pytest.raises(ValueError, match="omega_rule 'best'.*fixed, solved-log"):
        MerPOv2Config(omega_rule="best")


def two_new_tasks(te: TaskEmbedding, **cfg_kw) -> tuple[MerPOv2, list, list]:
    """A small MerPOv2 with the fitted embedding and two held-out logs (goals 2 and 6) with their
    inferred embeddings."""
    cfg = MerPOv2Config(rac=RACConfig(hidden=16, layers=1, batch_real=32), embedding=EMB, adapt_steps=15, **cfg_kw)
    m = MerPOv2(2, 2, list(GOALS), cfg)
    m.embedding = te
    logs = [task_log(GOALS[n], episodes=3, seed=40 + n) for n in (2, 6)]
    return m, [d for d, _ in logs], [m.infer(d, e, seed=1) for d, e in logs]


def assert_same_actor(a: RAC, b: RAC) -> None:
    for p, q in zip(a.actor.parameters(), b.actor.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def actors_differ(a: RAC, b: RAC) -> bool:
    return any(not torch.allclose(p, q) for p, q in zip(a.actor.parameters(), b.actor.parameters(), strict=True))


def test_adapting_logs_with_different_omegas_equals_adapting_each_at_its_omega(fitted):
    m, datas, infs = two_new_tasks(fitted[0], omega_rule="solved-log", start_rule="meta")
    mixed = m.adapt(datas, infs, [11, 12], log_success=[1.0, 0.4])  # omega 0.4, then 0
    alone = [m.adapt([datas[0]], [infs[0]], [11], omega=0.4)[0], m.adapt([datas[1]], [infs[1]], [12], omega=0.0)[0]]
    for a, b in zip(mixed, alone, strict=True):
        assert_same_actor(a, b)
    # and the two omegas did train different learners from the same start
    assert actors_differ(alone[1], m.adapt([datas[1]], [infs[1]], [12], omega=0.4)[0])


def test_the_solved_log_start_learns_a_solved_log_from_scratch_and_the_rest_from_pi_c(fitted):
    """start_rule solved-log: a log whose every episode succeeded is cloned by fresh networks
    (omega 1, pi_c not used); any other log is learned from (pi_c, Q_meta) at the omega rule's
    omega. Each learner equals the one asked for explicitly."""
    from learning.merpo_v2 import choose_learner

    rule = MerPOv2Config(omega=0.4, start_rule="solved-log")
    assert choose_learner(rule, 1.0)[:2] == ("scratch", 1.0) and "from scratch" in choose_learner(rule, 1.0)[2]
    assert choose_learner(rule, 0.8)[:2] == ("meta", 0.4)
    assert choose_learner(dataclasses.replace(rule, omega_rule="solved-log"), 0.8)[:2] == ("meta", 0.0)
    assert choose_learner(rule, None)[:2] == ("meta", 0.4) and "cannot choose" in choose_learner(rule, None)[2]
    assert choose_learner(MerPOv2Config(omega=0.4), 1.0)[:2] == ("meta", 0.4)  # "meta" never leaves pi_c
    # the default leaves pi_c's start alone (states); the image presets clone solved logs with the
    # BC baseline's steps (docs/algorithms.md 5b)
    from learning.merpo_train import preset

    assert MerPOv2Config().start_rule == "meta"
    for name in ("cpu", "demo", "paper"):
        cfg = preset(name)
        assert cfg.merpo_v2.start_rule == "solved-log" and cfg.merpo_v2.scratch_bc_steps == cfg.merpo.adapt_steps
    with pytest.raises(ValueError, match="start_rule 'fresh'.*meta, solved-log"):
        MerPOv2Config(start_rule="fresh")
    m, datas, infs = two_new_tasks(fitted[0], start_rule="solved-log")
    cfg = m.cfg
    mixed = m.adapt(datas, infs, [11, 12], log_success=[1.0, 0.4])
    alone = [m.adapt([datas[0]], [infs[0]], [11], start="scratch")[0],
             m.adapt([datas[1]], [infs[1]], [12], omega=0.4)[0]]
    for a, b in zip(mixed, alone, strict=True):
        assert_same_actor(a, b)
    # the solved log's learner did not start from pi_c: the same log from pi_c at omega 1 differs
    assert actors_differ(mixed[0], m.adapt([datas[0]], [infs[0]], [11], omega=1.0)[0])
    assert mixed[0].cfg.omega == 1.0 and mixed[1].cfg.omega == 0.4
    # the learner from scratch clones its log (`scratch_bc_steps`; no RAC update by default): it
    # acts as the single-task BC baseline's policy (the state alone, that seed), whatever z it gets
    from learning.merpo import train_bc
    from learning.rac import TanhGaussianActor

    torch.manual_seed(11)
    bc = TanhGaussianActor(2, 2, 16, 1)
    train_bc(bc, datas[0], cfg.scratch_bc_steps, 32, cfg.rac.actor_lr, seed=11)
    obs = datas[0]["obs"][:50]
    for z in (infs[0].z, infs[1].z, np.zeros_like(infs[0].z)):
        zs = torch.as_tensor(np.tile(z, (len(obs), 1)), dtype=obs.dtype)
        torch.testing.assert_close(mixed[0].actor.mean_unit(torch.cat([obs, zs], 1)), bc.mean_unit(obs))
    m.cfg = dataclasses.replace(cfg, scratch_rac_steps=5)  # with RAC updates after the clone: another learner
    assert actors_differ(mixed[0], m.adapt([datas[0]], [infs[0]], [11], start="scratch")[0])
    m.cfg = cfg
    with pytest.raises(ValueError, match="no meta-policy to pull towards"):
        m.adapt([datas[0]], [infs[0]], [11], omega=0.4, start="scratch")


def test_the_logs_success_counts_only_episodes_whose_success_is_known(tmp_path):
    from learning.merpo_train import log_success_of
    from learning.store import EpisodeStore, EpisodeWriter
    from tests.learning.storeutil import episode, spec

    with EpisodeWriter(tmp_path / "s.zarr", spec(), mode="w") as w:
        for k, (ok, known) in enumerate([(True, True), (False, True), (False, False), (True, True)]):
            w.add_episode(episode(k), task_id=1, success=ok, provenance={"success_known": known})
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert log_success_of(store, [0, 1, 2, 3]) == pytest.approx(2 / 3)  # the interrupted take is left out
    assert log_success_of(store, [2]) is None
