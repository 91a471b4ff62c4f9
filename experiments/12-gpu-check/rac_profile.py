"""Where a paper-size RAC update's time goes on a GPU: wall vs GPU kernel time per update, kernel
launches, host syncs and .item() calls, and the profiler's top ops by CPU time.

    python experiments/12-gpu-check/rac_profile.py   (needs CUDA; output in experiments/12-gpu-check/rac_profile_cuda.txt)
"""
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from learning.merpo_train import preset  # noqa: E402
from learning.rac import RAC  # noqa: E402

if not torch.cuda.is_available():
    sys.exit("experiments/12-gpu-check/rac_profile.py needs a CUDA device (torch sees none)")
dev = "cuda"
cfg = preset("paper").merpo.rac
obs_dim, act_dim, m = 160, 4, 2048
rac = RAC(obs_dim, act_dim, cfg, device=dev)
rac.model_buffer.add({k: v.to(dev) for k, v in {"obs": torch.randn(m, obs_dim), "act": torch.rand(m, act_dim) * 2 - 1,
    "rew": torch.randn(m), "next_obs": torch.randn(m, obs_dim), "done": torch.zeros(m)}.items()})
b = cfg.batch_real
batch = {k: v.to(dev) for k, v in {"obs": torch.randn(b, obs_dim), "act": torch.rand(b, act_dim) * 2 - 1,
    "rew": torch.randn(b), "next_obs": torch.randn(b, obs_dim), "done": torch.zeros(b)}.items()}
for _ in range(5):
    rac.update(batch)
torch.cuda.synchronize()
n = 20
t = time.perf_counter()
for _ in range(n):
    rac.update(batch)
torch.cuda.synchronize()
wall = (time.perf_counter() - t) / n * 1e3
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(10):
        rac.update(batch)
    torch.cuda.synchronize()
ka = prof.key_averages()
gpu_us = sum(e.self_device_time_total for e in ka if e.device_type.name == "CUDA") / 10
cnt = {k: sum(e.count for e in ka if e.key == k) / 10 for k in
       ("cudaLaunchKernel", "cudaMemcpyAsync", "cudaStreamSynchronize", "cudaDeviceSynchronize", "aten::item",
        "aten::_local_scalar_dense", "aten::to", "aten::copy_")}
print(json.dumps({"wall_ms_per_update": wall, "gpu_kernel_ms_per_update": gpu_us / 1e3, "per_update_counts": cnt}, indent=1))
print(ka.table(sort_by="self_cpu_time_total", row_limit=25))
