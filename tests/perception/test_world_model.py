"""The LOMPO world model: shapes, the deterministic filter, the ensemble uncertainty, heads."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from perception.networks import ConvDecoder, ConvEncoder
from perception.world_model import (
    WorldModel,
    WorldModelConfig,
    gaussian_kl,
    latent_uncertainty,
    random_shift,
)


def small(**kw) -> WorldModelConfig:
    base = dict(image_size=32, input_size=64, cnn_depth=4, deter=16, stoch=6, hidden=16,
                reward_hidden=16, ensemble=3, action_dim=2)
    base.update(kw)
    return WorldModelConfig(**base)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_encoder_decoder_shapes(size):
    enc = ConvEncoder(size, 4)
    x = torch.zeros(2, 3, size, size)
    assert enc(x).shape == (2, enc.out_dim)
    assert ConvDecoder(10, size, 4)(torch.zeros(2, 10)).shape == (2, 3, size, size)
    if size == 64:
        assert ConvEncoder(64, 32).out_dim == 1024  # LOMPO's 1024 features


def test_unsupported_size_is_a_clear_error():
    with pytest.raises(ValueError, match="not supported"):
        WorldModelConfig(image_size=48, input_size=48)
    with pytest.raises(ValueError, match="multiple"):
        WorldModelConfig(image_size=32, input_size=48)


def test_filter_step_equals_observe_mode_and_is_deterministic():
    torch.manual_seed(0)
    m = WorldModel(small()).eval()
    img = torch.randint(0, 255, (2, 5, 64, 64, 3), dtype=torch.uint8)
    act = torch.rand(2, 5, 2) * 2 - 1
    with torch.no_grad():
        embed = m.encode(m.images_in(img.flatten(0, 1))).unflatten(0, (2, 5))
        seq = m.observe(embed, act)  # no generator: posterior mean
        h, z = m.initial(2)
        prev = torch.zeros(2, 2)
        for t in range(5):
            h, z = m.step(img[:, t], prev, h, z)
            h2, z2 = m.step(img[:, t], prev, seq["h"][:, t - 1] if t else m.initial(2)[0],
                            seq["z"][:, t - 1] if t else m.initial(2)[1])
            torch.testing.assert_close(z, seq["z"][:, t])
            torch.testing.assert_close(h, seq["h"][:, t])
            torch.testing.assert_close(z, z2)
            prev = act[:, t]


def test_actions_are_scaled_by_the_store_limits():
    m = WorldModel(small())
    m.action_low.copy_(torch.tensor([0.0, -2.0]))
    m.action_high.copy_(torch.tensor([10.0, 2.0]))
    torch.testing.assert_close(m.action_in(torch.tensor([[10.0, -2.0]])), torch.tensor([[1.0, -1.0]]))


def test_uncertainty_is_zero_for_agreeing_members_and_grows_with_disagreement():
    z = torch.randn(4, 6)
    mu = torch.randn(4, 1, 6).expand(4, 3, 6)
    std = torch.ones(4, 3, 6)
    for kind in ("log_prob", "mean_dis"):
        assert latent_uncertainty(z, mu, std, kind).abs().max() < 1e-5
    spread = mu + torch.tensor([-1.0, 0.0, 1.0])[None, :, None]
    more = mu + 3 * torch.tensor([-1.0, 0.0, 1.0])[None, :, None]
    for kind in ("log_prob", "mean_dis"):
        u1, u2 = latent_uncertainty(z, spread, std, kind), latent_uncertainty(z, more, std, kind)
        assert (u1 > 0).all() and (u2 > u1).all(), kind
    assert torch.allclose(latent_uncertainty(z, mu, 2 * std, "max_var"), torch.full((4,), 2 * 6**0.5))


def test_gaussian_kl_matches_torch():
    d = torch.distributions
    m1, s1, m2, s2 = torch.randn(5, 3), torch.rand(5, 3) + 0.1, torch.randn(5, 3), torch.rand(5, 3) + 0.1
    ref = d.kl_divergence(d.Normal(m1, s1), d.Normal(m2, s2)).sum(-1)
    torch.testing.assert_close(gaussian_kl(m1, s1, m2, s2), ref)


def test_task_heads_slots_are_separate_and_start_at_phi():
    torch.manual_seed(0)
    m = WorldModel(small(n_slots=3))
    assert float(m.heads.proximal(torch.tensor([1, 2])).detach()) == 0.0
    h = torch.randn(2, 4, 16)
    with torch.no_grad():
        m.heads.prior_w1[2] += 0.5
    mu0, _ = m.heads.prior(h, torch.tensor([0, 1]))
    mu2, _ = m.heads.prior(h, torch.tensor([0, 2]))
    assert mu0.shape == (2, 4, 3, 6)
    torch.testing.assert_close(mu0[0], mu2[0])
    assert not torch.allclose(mu0[1], mu2[1])
    assert float(m.heads.proximal(torch.tensor([2])).detach()) > 0
    assert m.heads.reward(torch.randn(2, 4, 22), torch.tensor([0, 2])).shape == (2, 4)


def test_imagine_shapes_and_reproducible_with_a_seed():
    torch.manual_seed(0)
    m = WorldModel(small())
    h, z = torch.randn(3, 16), torch.randn(3, 6)
    pol = lambda feat, t: torch.tanh(feat[:, :2])  # noqa: E731
    slot = torch.zeros(3, dtype=torch.long)
    a = m.imagine(h, z, pol, 4, slot, torch.Generator().manual_seed(1))
    b = m.imagine(h, z, pol, 4, slot, torch.Generator().manual_seed(1))
    assert a["feat"].shape == (3, 5, 22) and a["reward"].shape == (3, 4)
    assert a["uncertainty"].shape == (3, 4) and (a["uncertainty"] >= 0).all()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_random_shift_one_shift_per_sequence():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).reshape(6, 1, 8, 8).repeat(1, 3, 1, 1)
    x = x[:1].expand(6, 3, 8, 8).clone()  # all frames equal
    y = random_shift(x, 2, torch.Generator().manual_seed(0), group=3)
    assert y.shape == x.shape
    torch.testing.assert_close(y[0], y[1])
    torch.testing.assert_close(y[0], y[2])


def test_losses_fall_when_fitting_one_batch():
    torch.manual_seed(0)
    m = WorldModel(small())
    img = torch.zeros(2, 6, 64, 64, 3, dtype=torch.uint8)
    for b in range(2):
        for t in range(6):  # a bright block moving over a dark scene
            img[b, t, 10 + 4 * t:26 + 4 * t, 8 + 20 * b:24 + 20 * b] = 230
    act, rew, slot = torch.rand(2, 6, 2), torch.randn(2, 6), torch.zeros(2, dtype=torch.long)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    first = None
    for i in range(50):
        out = m.losses(img, act, rew, slot, torch.Generator().manual_seed(i), shift_pad=0)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first or {k: float(v.detach()) for k, v in out.items()}
    assert float(out["image_nll"]) < 0.5 * first["image_nll"]
    assert float(out["reward_nll"]) < first["reward_nll"]


def test_perception_package_imports_without_torch():
    code = "import sys, perception, perception.preprocess; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_filter_step_exports_to_onnx_with_parity(tmp_path):
    np = pytest.importorskip("numpy")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    m = WorldModel(small(action_dim=4)).eval()

    class Step(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, image, prev_action, h, z):
            return self.model.step(image, prev_action, h, z)

    args = (torch.randint(0, 255, (1, 64, 64, 3), dtype=torch.uint8), torch.rand(1, 4),
            torch.randn(1, 16), torch.randn(1, 6))
    names = ["image", "prev_action", "h", "z"]
    torch.onnx.export(Step(m), args, str(tmp_path / "step.onnx"), input_names=names,
                      output_names=["h_next", "z_next"], external_data=False)
    out = ort.InferenceSession(str(tmp_path / "step.onnx")).run(
        None, {k: v.numpy() for k, v in zip(names, args, strict=True)})
    with torch.no_grad():
        ref = Step(m)(*args)
    for o, r in zip(out, ref, strict=True):
        np.testing.assert_allclose(o, r.numpy(), atol=1e-5)


def test_bootstrap_mask_trains_only_the_masked_in_prior_members():
    torch.manual_seed(0)
    cfg = small(ensemble=3, ensemble_bootstrap=0.5, free_nats=0.0)  # no clamp: every KL has a gradient
    m = WorldModel(cfg)
    img = torch.randint(0, 255, (2, 4, 64, 64, 3), dtype=torch.uint8)
    act, rew, slot = torch.rand(2, 4, 2), torch.randn(2, 4), torch.zeros(2, dtype=torch.long)
    mask = torch.tensor([[True, False, False], [True, False, True]])
    m.losses(img, act, rew, slot, torch.Generator().manual_seed(0), member_mask=mask)["loss"].backward()
    g = m.heads.prior_w1.grad[0].abs().flatten(1).sum(1)  # per member
    assert g[0] > 0 and g[2] > 0 and g[1] == 0  # member 1 is masked out of both windows
    m.zero_grad()
    # without a mask: LOMPO's random member per step (every member drawn over 8 steps here)
    m.losses(img.repeat(1, 2, 1, 1, 1), act.repeat(1, 2, 1), rew.repeat(1, 2), slot,
             torch.Generator().manual_seed(0))["loss"].backward()
    assert (m.heads.prior_w1.grad[0].abs().flatten(1).sum(1) > 0).all()


def test_bootstrap_probability_is_validated():
    with pytest.raises(ValueError, match="probability"):
        small(ensemble_bootstrap=1.5)


def test_prior_action_heads_read_the_action_and_train():
    torch.manual_seed(0)
    m = WorldModel(small(prior_action=True, free_nats=0.0))
    h, slot = torch.randn(3, 16), torch.zeros(3, dtype=torch.long)
    mu0, _ = m.prior(h, slot, torch.zeros(3, 2))
    mu1, _ = m.prior(h, slot, torch.ones(3, 2))
    assert mu0.shape == (3, 3, 6) and not torch.allclose(mu0, mu1)
    with pytest.raises(ValueError, match="take the action"):
        m.prior(h, slot)
    plain = WorldModel(small())  # LOMPO's heads: the action only acts through h'
    torch.testing.assert_close(plain.prior(h, slot, torch.zeros(3, 2))[0], plain.prior(h, slot, torch.ones(3, 2))[0])
    img = torch.randint(0, 255, (2, 4, 64, 64, 3), dtype=torch.uint8)
    out = m.losses(img, torch.rand(2, 4, 2), torch.randn(2, 4), torch.zeros(2, dtype=torch.long),
                   torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert m.heads.prior_w1.grad[0, :, 16:].abs().sum() > 0  # the action rows of the first layer learn
    r = m.imagine(h, torch.zeros(3, 6), lambda f, t: torch.rand(3, 2), 2, slot, torch.Generator().manual_seed(0))
    assert r["uncertainty"].shape == (3, 2)


def test_pooled_reward_head_adds_its_loss_and_trains_the_encoder():
    """pooled_reward_scale: one reward head for every task's windows, whose gradient reaches the
    shared encoder (the per-task heads alone never need the task in the latent)."""
    img = torch.randint(0, 255, (2, 4, 64, 64, 3), dtype=torch.uint8)
    act, rew, slot = torch.rand(2, 4, 2), torch.randn(2, 4), torch.tensor([1, 2])
    torch.manual_seed(0)
    plain = WorldModel(small(n_slots=3))
    assert not hasattr(plain, "pooled_reward")
    torch.manual_seed(0)
    m = WorldModel(small(n_slots=3, pooled_reward_scale=2.0))
    m.load_state_dict({**m.state_dict(), **plain.state_dict()})  # same weights but the new head
    a = plain.losses(img, act, rew, slot, torch.Generator().manual_seed(0))
    b = m.losses(img, act, rew, slot, torch.Generator().manual_seed(0))
    assert "pooled_reward_nll" not in a and float(b["pooled_reward_nll"]) > 0
    torch.testing.assert_close(b["loss"], a["loss"] + 2.0 * b["pooled_reward_nll"])
    a["loss"].backward()
    b["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.pooled_reward.parameters())
    # the encoder's gradient has the pooled term's part on top of the plain model's
    extra = sum(float((p.grad - q.grad).abs().sum()) for p, q in zip(m.encoder.parameters(),
                                                                      plain.encoder.parameters(), strict=True))
    assert extra > 1e-6


def test_random_prior_functions_are_fixed_and_make_members_disagree_off_the_data():
    from learning.meta_model import task_model

    with pytest.raises(ValueError, match="prior_random_scale"):
        small(prior_random_scale=-1.0)
    torch.manual_seed(0)
    plain = WorldModel(small(n_slots=2))
    torch.manual_seed(0)
    m = WorldModel(small(prior_random_scale=3.0, n_slots=2))
    names = {n for n, _ in m.named_parameters()}
    assert "prior_rand_w1" not in names and "prior_rand_w1" in m.state_dict()  # a buffer: never trained
    torch.testing.assert_close(m.prior_rand_w1, WorldModel(small(prior_random_scale=3.0)).prior_rand_w1)
    assert torch.equal(task_model(m, 1).prior_rand_w2, m.prior_rand_w2)  # one for every task slot
    slot = torch.zeros(64, dtype=torch.long)
    x = torch.full((1, 16), 0.5)
    spread = {k: mod.prior(x, slot[:1])[0].std(1).mean() for k, mod in (("plain", plain), ("random", m))}
    assert spread["random"] > 3 * spread["plain"], spread  # the random priors set members apart
    # Fit the heads to one target on a narrow cloud of h', with and without the random priors
    # (same init and batches); then compare the members' disagreement there and far off it.
    gen = torch.Generator().manual_seed(1)
    near = 0.1 * torch.randn(64, 16, generator=gen)
    far = near + 2.0 * torch.sign(torch.randn(64, 16, generator=gen))
    dis = {}
    for name, mod in (("plain", plain), ("random", m)):
        opt = torch.optim.Adam(mod.heads.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(0)
        for _ in range(300):
            h = 0.1 * torch.randn(64, 16, generator=gen)
            loss = ((mod.prior(h, slot)[0] - h[:, None, :6]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for where, h in (("near", near), ("far", far)):
                dis[name, where] = float(latent_uncertainty(torch.zeros(64, 6), *mod.prior(h, slot), "mean_dis").mean())
    assert dis["plain", "near"] < 0.05 and dis["random", "near"] < 0.05, dis  # fitted: agree on the data
    assert dis["random", "far"] > 2 * dis["plain", "far"], dis  # off it the random priors stay apart
    m2 = WorldModel(small(prior_random_scale=3.0, n_slots=2))
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.prior(far, slot)[0], m.prior(far, slot)[0])


def test_random_prior_action_gain_makes_the_random_priors_read_the_action_more():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="prior_random_action_gain"):
            small(prior_action=True, prior_random_scale=3.0, prior_random_action_gain=bad)
    torch.manual_seed(0)
    m1 = WorldModel(small(prior_action=True, prior_random_scale=3.0))
    m4 = WorldModel(small(prior_action=True, prior_random_scale=3.0, prior_random_action_gain=4.0))
    m4.load_state_dict(m1.state_dict())  # same heads and random functions: only the gain differs
    gen = torch.Generator().manual_seed(0)
    h, slot = torch.randn(256, 16, generator=gen), torch.zeros(256, dtype=torch.long)
    a1, a2 = torch.rand(256, 2, generator=gen) * 2 - 1, torch.rand(256, 2, generator=gen) * 2 - 1
    with torch.no_grad():
        trained = m1.heads.prior(torch.cat([h, m1.action_in(a1)], -1), slot)[0] - \
            m1.heads.prior(torch.cat([h, m1.action_in(a2)], -1), slot)[0]
        # the random part's change with the action: the heads' trained part changes alike in both
        change = {g: float(((m.prior(h, slot, a1)[0] - m.prior(h, slot, a2)[0]) - trained).abs().mean())
                  for g, m in ((1, m1), (4, m4))}
        torch.testing.assert_close(m1.prior(h, slot, a1)[1], m4.prior(h, slot, a1)[1])  # std: trained heads alone
    assert change[4] > 2 * change[1] > 0, change
