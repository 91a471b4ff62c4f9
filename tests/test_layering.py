"""The layering rule (docs/architecture.md): imports flow perception -> learning -> sim ->
robot_nodes, and the robot side (robot_nodes, the runtime part of learning, the store and
the one preprocessing function) runs without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["perception", "learning", "sim", "robot_nodes"]
TOP_LEVEL = {"perception", "learning", "sim", "robot_nodes", "vmerpo"}
# Modules the robot computer imports: numpy, opencv, onnxruntime, zarr, rclpy only.
TORCH_FREE = ["perception/preprocess.py", "learning/store.py", "learning/sampler.py", "learning/alignment.py",
              "learning/inspect_store.py", "learning/runtime", "robot_nodes"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(rel: str) -> list[Path]:
    p = ROOT / rel
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


def test_lower_layers_never_import_higher_ones():
    violations = []
    for i, layer in enumerate(LAYERS):
        higher = set(LAYERS[i + 1:]) | {"vmerpo"}
        for f in _files(layer):
            bad = _imports(f) & higher
            if bad:
                violations.append(f"{f.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_robot_side_modules_do_not_import_torch_statically():
    violations = [
        f"{f.relative_to(ROOT)}" for rel in TORCH_FREE for f in _files(rel)
        if _imports(f) & {"torch", "torchvision", "mujoco", "metaworld"}
    ]
    assert not violations, f"robot-side modules import torch/mujoco: {violations}"


def test_robot_side_modules_import_with_torch_blocked():
    """Import them in a fresh interpreter where `import torch` fails."""
    modules = []
    for rel in TORCH_FREE:
        for f in _files(rel):
            mod = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            modules.append(mod.removesuffix(".__init__"))
    code = (
        "import sys\n"
        "for m in ('torch', 'torchvision', 'mujoco', 'metaworld'): sys.modules[m] = None\n"
        f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_only_the_known_top_level_packages_exist():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages == TOP_LEVEL, f"top-level Python packages must be exactly {sorted(TOP_LEVEL)}"
