"""Exported policy (contract 2) and PolicyRuntime: parity with torch, file checks, errors,
invalid observations, and running without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from learning.runtime.policy_runtime import PolicyRuntime, read_spec
from learning.runtime.spec import SPEC_KEY, PolicySpec

ROOT = Path(__file__).resolve().parents[2]


def make_spec(**kw) -> PolicySpec:
    base = dict(image_size=32, action_names=["dx", "dy", "dz", "grip"], action_low=[-1, -1, -1, -1],
                action_high=[1, 1, 1, 1], deter_size=32, stoch_size=8, hold_action=[0, 0, 0, 0],
                state_names=["x", "y", "z", "g"], uses_state=True, control_hz=12.5, run_id="test")
    base.update(kw)
    return PolicySpec(**base)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from learning.export import make_test_policy

    path = tmp_path_factory.mktemp("policy") / "policy.onnx"
    path, module = make_test_policy(path, make_spec(action_low=[-1, -0.5, -1, 0]), seed=3)
    return path, module


def test_file_follows_the_contract(exported):
    path, _ = exported
    assert not Path(str(path) + ".data").exists() and not list(path.parent.glob("*.data"))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["image", "prev_action", "h", "z", "state"]
    assert [o.name for o in model.graph.output] == ["action", "h_next", "z_next"]
    spec = PolicySpec.from_json({p.key: p.value for p in model.metadata_props}[SPEC_KEY])
    assert spec.image_size == 32 and spec.action_low[1] == -0.5
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    # a plain session, dynamic batch
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"image": np.zeros((3, 32, 32, 3), np.uint8), "prev_action": np.zeros((3, 4), np.float32),
             "h": np.zeros((3, 32), np.float32), "z": np.zeros((3, 8), np.float32),
             "state": np.zeros((3, 4), np.float32)}
    action, h, z = sess.run(None, feeds)
    assert action.shape == (3, 4) and h.shape == (3, 32) and z.shape == (3, 8)


def test_closed_loop_parity_with_torch(exported):
    """100 recurrent steps: the runtime's actions equal the torch module's within 1e-4."""
    import torch

    path, module = exported
    rt = PolicyRuntime(path, providers="cpu")
    rt.reset()
    rng = np.random.default_rng(0)
    h, z, prev = torch.zeros(1, 32), torch.zeros(1, 8), torch.zeros(1, 4)
    worst = 0.0
    for _ in range(100):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        state = rng.normal(size=4).astype(np.float32)
        a_rt = rt.act(image, state)
        applied = np.clip(a_rt + rng.normal(0, 0.1, 4), -0.3, 0.3).astype(np.float32)  # a limiter
        rt.set_applied_action(applied)
        with torch.no_grad():
            a_t, h, z = module(torch.from_numpy(image[None]), prev, h, z, torch.from_numpy(state[None]))
        prev = torch.from_numpy(applied[None])
        worst = max(worst, float(np.abs(a_rt - a_t[0].numpy()).max()))
        assert np.all(a_rt >= np.array([-1, -0.5, -1, 0]) - 1e-7) and np.all(a_rt <= 1 + 1e-7)
    assert worst <= 1e-4, worst


def test_reset_and_applied_action_drive_the_recurrent_state(exported):
    path, _ = exported
    rt = PolicyRuntime(path, providers="cpu")
    image = np.full((32, 32, 3), 100, np.uint8)
    state = np.zeros(4, np.float32)
    first = rt.act(image, state)
    rt.act(image, state)
    assert np.any(rt.latent_state["h"] != 0)
    rt.reset()
    assert np.all(rt.latent_state["h"] == 0) and np.all(rt.latent_state["prev_action"] == 0)
    np.testing.assert_array_equal(rt.act(image, state), first)
    rt.set_applied_action(np.array([0.5, 0, 0, 0], np.float32))
    assert rt.latent_state["prev_action"][0] == 0.5


@pytest.mark.parametrize("bad,match", [
    (lambda: (np.zeros((32, 32, 3), np.float32), np.zeros(4, np.float32)), "uint8"),
    (lambda: (np.zeros((64, 64, 3), np.uint8), np.zeros(4, np.float32)), "shape"),
    (lambda: (np.zeros((32, 32, 3), np.uint8), np.array([0, np.nan, 0, 0], np.float32)), "non-finite"),
    (lambda: (np.zeros((32, 32, 3), np.uint8), np.zeros(3, np.float32)), "state has shape"),
    (lambda: (np.zeros((32, 32, 3), np.uint8), None), "needs a state"),
])
def test_invalid_observations_are_rejected_without_acting(exported, bad, match):
    path, _ = exported
    rt = PolicyRuntime(path, providers="cpu")
    rt.act(np.zeros((32, 32, 3), np.uint8), np.zeros(4, np.float32))
    before = rt.latent_state
    image, state = bad()
    with pytest.raises(ValueError, match=match):
        rt.act(image, state)
    after = rt.latent_state
    assert all(np.array_equal(before[k], after[k]) for k in before) and rt.steps == 1


def test_mismatched_spec_is_refused(exported):
    path, _ = exported
    rt = PolicyRuntime(path, providers="cpu")
    rt.check_compatible(image_size=32, action_dim=4, action_names=["dx", "dy", "dz", "grip"])
    with pytest.raises(ValueError, match="image_size: policy has 32, configuration has 64"):
        rt.check_compatible(image_size=64)
    with pytest.raises(ValueError, match="action_dim: policy has 4, configuration has 7"):
        rt.check_compatible(action_dim=7)


def test_bad_files_give_one_line_errors(exported, tmp_path):
    path, _ = exported
    with pytest.raises(FileNotFoundError, match="not found"):
        PolicyRuntime(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="not a valid ONNX model") as info:
        PolicyRuntime(corrupt)
    assert "\n" not in str(info.value)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx file" * 10)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        PolicyRuntime(garbage)
    # a valid ONNX model that is not a vmerpo policy
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(plain))
    with pytest.raises(ValueError, match="no vmerpo.spec metadata"):
        PolicyRuntime(plain)
    with pytest.raises(ValueError, match="no vmerpo.spec metadata"):
        read_spec(plain)
    # a spec that contradicts the graph
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == SPEC_KEY:
            p.value = make_spec(image_size=64).to_json()
    lying = tmp_path / "lying.onnx"
    onnx.save(model, str(lying))
    with pytest.raises(ValueError, match="input image has shape"):
        PolicyRuntime(lying)


def test_runtime_runs_without_torch(exported):
    path, _ = exported
    code = (
        "import sys\n"
        "for m in ('torch', 'torchvision'): sys.modules[m] = None\n"
        "import numpy as np\n"
        "from learning.runtime.policy_runtime import PolicyRuntime\n"
        f"rt = PolicyRuntime({str(path)!r}, providers='cpu')\n"
        "a = rt.act(np.zeros((32, 32, 3), np.uint8), np.zeros(4, np.float32))\n"
        "assert a.shape == (4,) and np.all(np.isfinite(a))\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
