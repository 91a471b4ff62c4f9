"""The demo report's direct-vs-ROS comparison: the stated binomial rule, and the lines it writes."""

from __future__ import annotations

from vmerpo.commands.demo import DIRECT_EVAL, ROS_EVAL, _write_report, agree_within_binomial_noise


def test_two_proportion_rule():
    assert agree_within_binomial_noise(0, 10, 0, 10)
    assert agree_within_binomial_noise(3, 10, 5, 10)       # |0.2| <= 1.96 * 0.219
    assert not agree_within_binomial_noise(0, 10, 6, 10)   # |0.6| > 1.96 * 0.205
    assert not agree_within_binomial_noise(10, 40, 30, 40)


def _result(successes: list[bool]) -> dict:
    eps = [{"task_id": 40, "episode_index": i, "seed": i, "success": s, "return": 1.0 + i, "length": 150,
            "steps_to_success": 9 if s else None} for i, s in enumerate(successes)]
    return {"success_rate": sum(successes) / len(successes), "episodes": len(successes),
            "per_task": {"40": {}}, "episode_results": eps}


def test_report_has_the_ros_row_and_the_agreement_line(tmp_path):
    direct, ros = _result([True, False] * 5), _result([True, False] * 5)
    report = [{"step": s, "command": "vmerpo ...", "status": "ok", "result": r}
              for s, r in ((DIRECT_EVAL, direct), (ROS_EVAL, ros))]
    _write_report(tmp_path, report, 60.0)
    text = (tmp_path / "report.md").read_text()
    assert f"| {ROS_EVAL} | 0.50 | 10 |" in text
    assert "5/10 vs 5/10 successes: **agree within binomial noise**" in text
    assert "two-proportion z-test at the 5 % level" in text and "10/10 identical" in text


# -- the whole report, built offline from a small synthetic output directory --------------------
SECTIONS = ("Steps", "Held-out task success", "MerPO v2 against BC and the logs on the held-out tasks",
            "Data", "Training curves",
            "World model: reconstruction and open-loop prediction",
            "World model: uncertainty vs prediction error", "Rollout", "Redo on your own logs")


def _synthetic_out(d):
    """An output directory as a demo whose adapt step failed leaves it: stores, a (tiny,
    untrained) world model with metrics and image grids, data.png; adapted/ and rollout.mp4
    are stale, from an earlier run in the same directory."""
    import dataclasses
    import json

    import cv2
    import numpy as np
    from PIL import Image

    from learning.store import EpisodeWriter
    from learning.synthetic import bench_spec, synthetic_episode
    from learning.world_model_train import preset, save_checkpoint
    from perception.world_model import WorldModel
    from vmerpo.commands.demo import steps

    rng = np.random.default_rng(0)
    for name, tasks in (("logs.zarr", [0, 1]), ("heldout.zarr", [5])):
        with EpisodeWriter(d / name, bench_spec(32), mode="w", log=lambda m: None) as w:
            for t in tasks:
                for i in range(2):
                    w.add_episode(synthetic_episode(rng, 16, 32), task_id=t, success=i == 0)
    cfg = preset("tiny")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, input_size=32, n_slots=3))
    model = WorldModel(cfg.model).eval()
    save_checkpoint(d / "run" / "world_model" / "model.pt", model, None, 10, cfg, {0: 1, 1: 2})
    save_checkpoint(d / "adapted" / "task_model.pt", model, None, 0, cfg, {5: 0})
    (d / "adapted" / "config.json").write_text(json.dumps({"data": str(d / "heldout.zarr")}))
    (d / "run" / "world_model" / "metrics.jsonl").write_text("\n".join(
        json.dumps({"step": s, "loss": 10.0 / s, "image_nll": 8.0 / s, "kl_loss": 1.5, "reward_nll": 0.5 / s})
        for s in (5, 10)) + "\n")
    (d / "run" / "metrics.jsonl").write_text("\n".join(
        json.dumps({"step": s, "q": 0.1 * s, "conservative_gap": 5.0, "behaviour_nll": 3.0 - s / 10,
                    "meta_kl": 0.3, **({"eval_success": 0.5, "eval_return": 700.0} if s == 10 else {})})
        for s in (5, 10)) + "\n")
    img = Image.fromarray(rng.integers(0, 255, (16, 64, 3), dtype=np.uint8))
    (d / "run" / "world_model" / "images").mkdir(parents=True)
    for name in ("recon_000005.png", "openloop_000005.png", "recon_000010.png", "openloop_000010.png"):
        img.save(d / "run" / "world_model" / "images" / name)
    img.save(d / "data.png")
    vw = cv2.VideoWriter(str(d / "rollout.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 16))
    for _ in range(8):
        vw.write(rng.integers(0, 255, (16, 64, 3), dtype=np.uint8))
    vw.release()
    plan = steps(d, "reach-v3", 0)
    report = [{"step": t, "command": "vmerpo " + " ".join(a), "status": "ok", "seconds": 1.0} for t, a in plan[:6]]
    report[3]["result"] = None  # the held-out summary is then computed from the store
    report.append({"step": plan[6][0], "command": "vmerpo " + " ".join(plan[6][1]), "status": "exit 2", "seconds": 0.5})
    report += [{"step": t, "command": "vmerpo " + " ".join(a), "status": "not run (an earlier step failed)"}
               for t, a in plan[7:]]
    (d / "report.json").write_text(json.dumps({"steps": report, "total_s": 12.0}))
    return d


def _html_and_md(out):
    import re

    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page and f"## {title}\n" in md, title
    srcs = re.findall(r'src="([^"]*)"', page)
    assert all(s.startswith("data:image/") for s in srcs), [s[:40] for s in srcs]  # one file
    assert "could not be built" not in md
    return srcs, md


def test_report_is_one_html_file_with_every_section_and_survives_missing_artefacts(tmp_path):
    import json

    from vmerpo import cli

    out = _synthetic_out(tmp_path)
    assert cli.main(["demo", "--out", str(out), "--report-only"]) == 0
    srcs, md = _html_and_md(out)
    assert len(srcs) == 5  # data, curves, reconstruction, open loop, uncertainty
    for name in ("training_curves.png", "uncertainty.png"):  # next to report.md
        assert (out / name).stat().st_size > 0 and f"]({name})" in md
    assert "Spearman(u, error): meta-model (run/world_model): phi, this task is not in its training data" in md
    assert "| held-out log (`heldout.zarr`) | 2 | 32 | 1 (id 5) |" in md  # computed from the store
    # what the failed adapt step did not make is named, and stale files are not shown as this run's
    assert "No direct (ONNX in MuJoCo) evaluation result: the step 'evaluate the ONNX policy in MuJoCo' " \
           "did not run (an earlier step failed)." in md
    assert "No rollout video (rollout.mp4): the step 'evaluate the ONNX policy in MuJoCo' did not run " \
           "(an earlier step failed) (rollout.mp4 in the output directory is from an earlier run" in md
    assert "No task model (adapted/task_model.pt) to compare: the step 'adapt to held-out task 40" in md
    assert "| adapt to held-out task 40 from its small log: MerPO v2 (task inferred from the log's rewards) " \
           "| exit 2 |" in md
    assert "No comparison on the held-out tasks: the step 'compare: merpo on held-out task 40' did not run" in md
    assert f"vmerpo adapt --run {out}/run" in md  # the exact command, under "Redo on your own logs"

    # the same directory once every step succeeded: the rollout GIF, both models, direct vs ROS 2
    rec = json.loads((out / "report.json").read_text())
    result = _result([True, False])
    merpo, bc = {40: 1.0, 41: 0.5, 42: 0.5, 43: 1.0}, {40: 0.5, 41: 0.0, 42: 0.5, 43: 0.5}
    for e in rec["steps"]:
        e["status"] = "ok"
        if e["step"] in (DIRECT_EVAL, ROS_EVAL) or "--policy expert" in e["command"]:
            e["result"] = result
        if e["step"].startswith("compare: "):
            method, task = e["step"].split()[1], int(e["step"].split()[-1])
            e["result"] = {"success_rate": (merpo if method == "merpo" else bc)[task], "episodes": 20}
    (out / "report.json").write_text(json.dumps(rec))
    assert cli.main(["demo", "--out", str(out), "--report-only"]) == 0
    srcs, md = _html_and_md(out)
    assert len(srcs) == 7 and sum(s.startswith("data:image/gif;base64,") for s in srcs) == 1
    # the comparison: per task, the means, and MerPO minus BC paired by task (+0.375; every
    # resample of the differences 0.5, 0.5, 0, 0.5 lies in [0, 0.5])
    assert "| 41 | – | 0.00 | 0.50 |" in md, md[md.index("Success per task"):][:600]
    row = next(line for line in md.splitlines() if line.startswith("| MerPO v2 minus BC (the log alone) |"))
    lo, hi = (float(x) for x in row.split("[")[1].split("]")[0].split(","))
    assert "+0.38 [" in row and 0.0 <= lo <= 0.25 and hi == 0.5 and row.endswith("| 4 |"), row
    assert (out / "compare.png").stat().st_size > 0
    assert (out / "rollout.gif").stat().st_size > 0 and "8 frames at 10 fps" in md
    assert "task model theta_j (adapted/task_model.pt, heads adapted on this log): **" in md
    assert "1/2 vs 1/2 successes: **agree within binomial noise**" in md and "No " not in md


def test_report_of_a_run_that_made_nothing(tmp_path):
    from vmerpo.demo_report import build, save_steps

    save_steps(tmp_path, [{"step": "collect", "command": "vmerpo collect --out x/logs.zarr", "status": "exit 2"}], 1.0)
    build(tmp_path)
    page, md = (tmp_path / "report.html").read_text(), (tmp_path / "report.md").read_text()
    assert "src=" not in page and "could not be built" not in md
    for line in ("No meta-train logs (logs.zarr): the step 'collect' failed (exit 2).",
                 "No rollout video (rollout.mp4): the step that makes it is not in this run's report.json.",
                 "No training metrics"):
        assert line in md


def test_a_bad_config_is_refused_before_any_step(tmp_path, capsys):
    from vmerpo import cli

    out = tmp_path / "demo"
    assert cli.main(["demo", "--config", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope: no such config file (or preset tiny|demo|cpu|paper)" in err[0], err
    assert not out.exists()
