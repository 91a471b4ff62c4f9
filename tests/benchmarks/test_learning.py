"""The learning benchmark's aggregation: the table and JSON come from the evaluations."""

from __future__ import annotations

import math

import pytest

from vmerpo.benchmarks.learning import _subset, bar_plot, markdown_table, summarize


def rows():
    out = []
    for q, base in (("medium", 0.5), ("mixed", 0.3)):
        for task, off in ((40, 0.1), (41, -0.1)):
            out.append({"quality": q, "seed": 0, "task": task, "method": "merpo",
                        "success_rate": base + off, "episodes": 10})
            out.append({"quality": q, "seed": 0, "task": task, "method": "bc",
                        "success_rate": base - 0.2, "episodes": 10})
    return out


def test_summary_mean_stderr_and_counts():
    res = summarize(rows(), ["merpo", "bc"], ["medium", "mixed"])
    m = res["merpo"]["medium"]
    assert m["success_mean"] == pytest.approx(0.5)
    # two units 0.6 and 0.4: sd 0.1414, se 0.1
    assert m["success_stderr"] == pytest.approx(0.1)
    assert m["n_episodes"] == 20 and m["n_units"] == 2
    assert res["bc"]["mixed"]["success_mean"] == pytest.approx(0.1)
    assert res["bc"]["mixed"]["success_stderr"] == 0.0
    empty = summarize([], ["merpo"], ["expert"])["merpo"]["expert"]
    assert math.isnan(empty["success_mean"]) and empty["n_episodes"] == 0


def test_table_and_plot(tmp_path):
    res = summarize(rows(), ["merpo", "bc"], ["medium", "mixed"])
    table = markdown_table(res, {"medium": 0.2, "mixed": 0.25}, ["merpo", "bc"], ["medium", "mixed"])
    lines = table.splitlines()
    assert lines[0] == "| method | medium | mixed |"
    assert lines[2].startswith("| merpo | 0.50 ± 0.10 (n=20) | 0.30 ± 0.10 (n=20)")
    assert lines[-1] == "| behaviour (held-out logs) | 0.20 | 0.25 |"
    bar_plot(res, {"medium": 0.2, "mixed": 0.25}, ["merpo", "bc"], ["medium", "mixed"], tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_bad_subsets_are_refused():
    assert _subset("bc, merpo", ("merpo", "bc"), "--methods") == ["bc", "merpo"]
    with pytest.raises(ValueError, match="--methods: unknown"):
        _subset("bc,sac", ("merpo", "bc"), "--methods")


def test_an_out_whose_world_model_is_another_preset_is_refused(tmp_path):
    from dataclasses import replace

    from vmerpo.benchmarks.learning import BUDGETS, _world_model

    (tmp_path / "world_model").mkdir()
    (tmp_path / "world_model" / "model.pt").write_bytes(b"x")  # finished, from before the marker: cpu
    bench = replace(BUDGETS["full"], wm_preset="bench")
    with pytest.raises(ValueError, match="preset 'cpu', not 'bench'"):
        _world_model(tmp_path, "unused.zarr", bench, "cpu", 1, False)
    assert _world_model(tmp_path, "unused.zarr", BUDGETS["full"], "cpu", 1, False) == str(tmp_path / "world_model")
    (tmp_path / "world_model" / "bench_world_model.json").write_text('{"preset": "bench"}')
    assert _world_model(tmp_path, "unused.zarr", bench, "cpu", 1, False) == str(tmp_path / "world_model")
    with pytest.raises(ValueError, match="preset 'bench', not 'cpu'"):
        _world_model(tmp_path, "unused.zarr", BUDGETS["full"], "cpu", 1, False)
    # the pooled reward head's weight is part of what the shared model is (markers without it: 0)
    pooled = replace(bench, pooled_reward_scale=10.0)
    with pytest.raises(ValueError, match="pooled reward weight 0.0, not 10.0"):
        _world_model(tmp_path, "unused.zarr", pooled, "cpu", 1, False)
    (tmp_path / "world_model" / "bench_world_model.json").write_text(
        '{"preset": "bench", "pooled_reward_scale": 10.0}')
    assert _world_model(tmp_path, "unused.zarr", pooled, "cpu", 1, False) == str(tmp_path / "world_model")
    with pytest.raises(ValueError, match="pooled reward weight 10.0, not 0.0"):
        _world_model(tmp_path, "unused.zarr", bench, "cpu", 1, False)


def test_an_out_meta_trained_with_the_other_meta_critic_is_refused(tmp_path):
    import json
    from dataclasses import replace

    from vmerpo.benchmarks.learning import BUDGETS, _meta_train

    run = tmp_path / "runs" / "medium_s0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"merpo": {"meta_critic_steps": 0}}}))
    (run / "metrics.json").write_text("{}")  # finished
    fit = replace(BUDGETS["full"], meta_critic="fit")
    with pytest.raises(ValueError, match="meta_critic_steps=0, not 20: use another --out"):
        _meta_train((str(tmp_path), "medium", 0, "unused.zarr", "unused", fit, "cpu"))
    assert _meta_train((str(tmp_path), "medium", 0, "unused.zarr", "unused", BUDGETS["full"], "cpu")) == str(run)


@pytest.mark.parametrize("k, why", [("0", "must be at least 1"), ("11", "has 10 held-out tasks")])
def test_heldout_task_count_out_of_range_is_a_one_line_error(tmp_path, k, why):
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "vmerpo", "bench", "learning", "--family", "reach",
                           "--heldout-tasks", k, "--out", str(tmp_path / "b"), "--no-progress"],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and why in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b" / "data").exists()  # refused before collecting anything


def _bench_cli(tmp_path, *args):
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.run([sys.executable, "-m", "vmerpo", "bench", "learning", "--family", "reach",
                           "--out", str(tmp_path / "b"), "--no-progress", *args],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)


def test_hand_init_noise_out_of_range_or_unlike_the_out_is_a_one_line_error(tmp_path):
    pytest.importorskip("metaworld")
    from sim.collect import CollectConfig, collect

    proc = _bench_cli(tmp_path, "--hand-init-noise", "0.5")
    assert proc.returncode == 2 and "hand start noise 0.5 m not supported" in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    # an --out whose logs have the fixed start refuses random starts before collecting more
    data = tmp_path / "b" / "data"
    collect(CollectConfig(family="reach-v3", out=str(data / "expert.zarr"), tasks=[0], episodes_per_task=1,
                          quality="expert", max_episode_steps=150, seed=100, workers=0), progress=False)
    proc = _bench_cli(tmp_path, "--hand-init-noise", "0.05")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "collected with hand_init_noise=0.0, this run asks for 0.05" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # the same store refuses the goal pin (its images have none), and a family without a goal
    # marker refuses the pin before collecting anything
    proc = _bench_cli(tmp_path, "--goal-pin")
    assert proc.returncode == 2 and "collected with goal_pin=False, this run asks for True" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _bench_cli(tmp_path, "--goal-pin", "--family", "drawer-close", "--out", str(tmp_path / "d"))
    assert proc.returncode == 2 and "drawer-close-v3 draws no goal marker" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "d").exists()
