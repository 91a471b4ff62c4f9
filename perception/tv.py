"""The one guarded torchvision import (docs/environment.md: the registry's torchvision wheel is built
against CUDA, and `import torchvision` fails on CPU torch with "operator torchvision::nms does
not exist"; defining the op schemas first makes its pure-Python parts work)."""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_LIB: list[torch.library.Library] = []  # keeps the schema definitions alive


def torchvision() -> ModuleType:
    try:
        import torchvision as tv
        return tv
    except RuntimeError as e:
        if "does not exist" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if not _LIB:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIB.append(lib)
    import torchvision as tv
    return tv


def save_image_grid(rows: list[torch.Tensor], path: str) -> None:
    """Rows of images [N, 3, H, W] in [0, 1] -> one PNG, a row per tensor."""
    tv = torchvision()
    import torchvision.utils as tvu  # noqa: F401  (imported by torchvision() above)

    n = rows[0].shape[0]
    grid = tv.utils.make_grid(torch.cat([r.float().cpu() for r in rows]), nrow=n, padding=1, pad_value=1.0)
    tv.utils.save_image(grid, path)
