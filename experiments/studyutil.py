"""Shared by the study tests under experiments/: load the study script beside a test (the
NN-slug folders are not packages, so a script is loaded from its file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(test_file: str, name: str) -> ModuleType:
    """`name`.py from the folder of `test_file` (pass `__file__`)."""
    spec = importlib.util.spec_from_file_location(f"vmerpo_experiment_{name}", Path(test_file).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
