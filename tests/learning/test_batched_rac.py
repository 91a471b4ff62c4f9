"""The batched learner is K RAC learners: same updates, same random streams, same results."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learning.batched_rac import BatchedRAC, stack_batches, stats_to_floats
from learning.rac import RAC, RACConfig, TanhGaussianActor

OBS, ACT = 12, 3
CFG = RACConfig(hidden=16, layers=2, batch_real=8, batch_model=8, cql_n_actions=3, rollout_batch=6,
                model_buffer=40, lam=2.0)


def batch(seed: int, n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(n, OBS, generator=g), "act": torch.rand(n, ACT, generator=g) * 2 - 1,
            "rew": torch.randn(n, generator=g), "next_obs": torch.randn(n, OBS, generator=g),
            "done": (torch.rand(n, generator=g) < 0.1).float()}


def rollout_fn(slot: int):
    """A fixed random linear 'world model' per task: horizon 2."""
    g = torch.Generator().manual_seed(100 + slot)
    W, U = torch.randn(OBS, OBS, generator=g) * 0.1, torch.randn(ACT, OBS, generator=g) * 0.1

    def fn(start, policy):
        feats, acts, rews = [start], [], []
        x = start
        for _ in range(2):
            a = policy(x)
            x = torch.tanh(x @ W + a @ U)
            feats.append(x)
            acts.append(a)
            rews.append(x[:, 0])
        return {"feat": torch.stack(feats, 1), "action": torch.stack(acts, 1), "reward": torch.stack(rews, 1),
                "uncertainty": torch.stack(rews, 1).abs()}
    return fn


def max_diff(racs: list[RAC], others: list[RAC]) -> float:
    d = 0.0
    for a, b in zip(racs, others, strict=True):
        for m1, m2 in ((a.actor, b.actor), (a.critic, b.critic), (a.critic_target, b.critic_target)):
            for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
                d = max(d, float((p - q).detach().abs().max()))
        for n in ("log_alpha_ent", "log_alpha_cql", "log_lam"):
            d = max(d, float((getattr(a, n) - getattr(b, n)).detach().abs()))
    return d


@pytest.mark.parametrize("variant", ["plain", "model+meta", "dual-lambda", "mixed-ratio", "advantage"])
def test_a_batched_update_of_k_tasks_equals_k_single_task_updates(variant):
    cfg = CFG
    if variant == "dual-lambda":
        cfg = dataclasses.replace(CFG, lam_target=0.5, cql_states=4)
    if variant == "advantage":  # MerPO v2's advantage-weighted behaviour term, with model rows and pi_c
        cfg = dataclasses.replace(CFG, behaviour_weight="advantage", awr_beta=2.0, awr_max_weight=5.0)
    if variant == "mixed-ratio":
        cfg = dataclasses.replace(CFG, real_ratio=0.8, batch_model=6, rollout_noise=0.1, uncertainty_penalty=1.0)
    K, seeds = 3, [5, 9, 2]
    single = [RAC(OBS, ACT, cfg, seed=s) for s in seeds]
    twins = [RAC(OBS, ACT, cfg, seed=s) for s in seeds]
    meta = TanhGaussianActor(OBS, ACT, cfg.hidden, cfg.layers) if variant in ("model+meta", "advantage") else None
    if variant == "dual-lambda":
        for r, t in zip(single, twins, strict=True):
            beh = TanhGaussianActor(OBS, ACT, cfg.hidden, cfg.layers)
            r.set_behaviour_policy(beh)
            t.set_behaviour_policy(beh)
    batched = BatchedRAC.from_racs(twins)
    use_model = variant != "plain"
    for step in range(6):
        reals = [batch(1000 * step + k) for k in range(K)]
        if use_model and step % 2 == 0:
            starts = [batch(77 + step + k, cfg.rollout_batch)["obs"] for k in range(K)]
            for k, r in enumerate(single):
                r.refresh_rollouts(starts[k], rollout_fn(k))
            batched.refresh_rollouts(torch.stack(starts), [rollout_fn(k) for k in range(K)])
        ref = [r.update(b, meta) for r, b in zip(single, reals, strict=True)]
        got = batched.update(stack_batches(reals), meta)
    batched.write_back(twins)
    assert max_diff(single, twins) < 1e-5
    for k in range(K):  # the statistics too (the last step's)
        floats = stats_to_floats(got, k)
        for name, v in ref[k].items():
            assert floats[name] == pytest.approx(v, rel=1e-4, abs=1e-5), name
    # the random streams advanced identically: the next draw of each task agrees
    assert all(torch.equal(torch.rand(3, generator=a.generator), torch.rand(3, generator=b.generator))
               for a, b in zip(single, twins, strict=True))
    assert all(a.steps == b.steps == 6 for a, b in zip(single, twins, strict=True))


def test_results_do_not_depend_on_which_tasks_share_a_batch():
    """Task 1 learned alone and alongside two others ends identical."""
    alone = BatchedRAC.create(OBS, ACT, CFG, seeds=[9])
    crowd = BatchedRAC.create(OBS, ACT, CFG, seeds=[5, 9, 2])
    for step in range(4):
        b = batch(step)
        alone.update(stack_batches([b]))
        crowd.update(stack_batches([batch(50 + step), b, batch(90 + step)]))
    for p, q in zip(alone.actor.parameters(), crowd.actor.parameters(), strict=True):
        assert torch.allclose(p[0], q[1], atol=1e-6)


def test_resuming_a_batched_learner_from_written_back_rac_state_dicts_is_exact(tmp_path):
    """write_back -> RAC.state_dict -> torch.save/load -> from_racs continues bit-for-bit
    (the MerPO checkpoint path), including Adam's moments and the model buffers."""
    seeds = [1, 2]
    ref = BatchedRAC.create(OBS, ACT, CFG, seeds=seeds)
    run = BatchedRAC.create(OBS, ACT, CFG, seeds=seeds)
    starts = torch.stack([batch(7)["obs"][:6], batch(8)["obs"][:6]])
    for b in (ref, run):
        b.refresh_rollouts(starts, [rollout_fn(0), rollout_fn(1)])
    for step in range(3):
        reals = stack_batches([batch(step), batch(step + 10)])
        ref.update(reals)
        run.update(reals)
    racs = [RAC(OBS, ACT, CFG, seed=0) for _ in seeds]
    run.write_back(racs)
    torch.save([r.state_dict() for r in racs], tmp_path / "ckpt.pt")
    loaded = [RAC(OBS, ACT, CFG, seed=0) for _ in seeds]
    for r, sd in zip(loaded, torch.load(tmp_path / "ckpt.pt", weights_only=True), strict=True):
        r.load_state_dict(sd)
    for r, src in zip(loaded, racs, strict=True):  # RAC.state_dict leaves buffers to MerPO's checkpoint
        r.model_buffer.data = {n: v.clone() for n, v in src.model_buffer.data.items()}
    resumed = BatchedRAC.from_racs(loaded)
    for step in range(3, 6):
        reals = stack_batches([batch(step), batch(step + 10)])
        ref.update(reals)
        resumed.update(reals)
    for p, q in zip(ref.critic.parameters(), resumed.critic.parameters(), strict=True):
        assert torch.equal(p, q)


def test_learners_at_different_step_counts_batch_exactly():
    """Meta-training picks tasks at random: a learner updated more often keeps its own Adam
    bias correction and its own buffer length inside the batch."""
    seeds = [3, 4, 5]
    single = [RAC(OBS, ACT, CFG, seed=s) for s in seeds]
    twins = [RAC(OBS, ACT, CFG, seed=s) for s in seeds]
    for group in (single, twins):  # task 0 learns 3 steps, task 1 one step, task 2 none, alone
        for k, n in enumerate((3, 1, 0)):
            group[k].refresh_rollouts(batch(40 + k, 6)["obs"], rollout_fn(k))
            for i in range(n):
                group[k].refresh_rollouts(batch(60 + i, 6)["obs"], rollout_fn(k))
                group[k].update(batch(200 + 10 * k + i))
    assert len({len(r.model_buffer) for r in twins}) == 3 and len({r.steps for r in twins}) == 3
    batched = BatchedRAC.from_racs(twins)
    for step in range(4):
        reals = [batch(500 + 10 * step + k) for k in range(3)]
        for r, b in zip(single, reals, strict=True):
            r.update(b)
        batched.update(stack_batches(reals))
    batched.write_back(twins)
    assert max_diff(single, twins) < 1e-5
    assert [r.steps for r in twins] == [7, 5, 4]
    for a, b in zip(single, twins, strict=True):  # Adam's state written back as torch keeps it
        sa, sb = a.actor_opt.state_dict()["state"], b.actor_opt.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            assert float(sa[i]["step"]) == float(sb[i]["step"])
            assert torch.allclose(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"], atol=1e-7)


def test_task_groups_keep_cpu_batches_within_the_cache_budget():
    from learning.batched_rac import CPU_BATCH_BYTES, critic_rows, task_groups

    big = dataclasses.replace(CFG, hidden=256, batch_real=256, batch_model=256, cql_n_actions=10)
    for cfg in (CFG, big):
        per_task = critic_rows(cfg) * 2 * cfg.hidden * 4
        for n in (1, 4, 40):
            groups = task_groups(n, cfg, "cpu")
            assert sorted(i for g in groups for i in g) == list(range(n))
            assert all(len(g) * per_task <= max(CPU_BATCH_BYTES, per_task) for g in groups)
            assert max(map(len, groups)) - min(map(len, groups)) <= 1
        assert task_groups(40, cfg, "cuda") == [list(range(40))]
    assert critic_rows(big) == 256 + 256 + 3 * 10 * 256 + 256
