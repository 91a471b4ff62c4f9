"""MuJoCo manipulation tasks with camera images, task splits, behaviour policies, data
collection and closed-loop evaluation.

Light on purpose: submodules import MuJoCo; this package does not. Offscreen rendering
needs MUJOCO_GL set before the first `import mujoco`: EGL unless the user chose otherwise.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
