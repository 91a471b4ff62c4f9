"""Launch files (ROS 2 YAML format), their config files, `vmerpo launch`, and colcon."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robot_nodes.launcher import EXECUTABLES, LaunchError, load_launch_file, parse_launch_args

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.yaml"))


def test_the_three_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= {"sim_policy.launch.yaml", "robot_policy.launch.yaml",
                                              "record.launch.yaml"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_resolves_with_its_required_args(path):
    doc = yaml.safe_load(path.read_text())
    required = {e["arg"]["name"]: "x.onnx" for e in doc["launch"] if "arg" in e and "default" not in e["arg"]}
    nodes = load_launch_file(path, required)
    assert nodes and all(n.exec in EXECUTABLES for n in nodes)
    for n in nodes:
        args = n.ros_args
        files = [args[i + 1] for i, a in enumerate(args) if a == "--params-file"]
        assert all(Path(f).is_file() for f in files)
        # Parameter files come before -p overrides, so launch arguments win.
        if files and "-p" in args:
            assert args.index("--params-file") < args.index("-p")


def test_launch_arg_defaults_agree_with_the_config_files():
    """A launch argument that overrides a config value defaults to that same value."""
    for path in LAUNCH_FILES:
        doc = yaml.safe_load(path.read_text())
        defaults = {e["arg"]["name"]: str(e["arg"]["default"]) for e in doc["launch"]
                    if "arg" in e and "default" in e["arg"]}
        for e in doc["launch"]:
            node = e.get("node")
            if not node:
                continue
            config = {}
            for p in node.get("param", []):
                if "from" in p:
                    f = ROOT / "config" / Path(p["from"]).name
                    config.update(yaml.safe_load(f.read_text())["/**"]["ros__parameters"])
            for p in node.get("param", []):
                var = str(p.get("value", ""))
                if var.startswith("$(var ") and p["name"] in config:
                    arg = var[len("$(var "):-1]
                    if arg in defaults:
                        want = config[p["name"]]
                        got = yaml.safe_load(defaults[arg])
                        assert got == want, f"{path.name}: arg {arg} defaults to {got!r}, config has {want!r}"


def test_launch_arguments_override_and_conditions():
    nodes = load_launch_file(ROOT / "launch/record.launch.yaml", {"store": "a.zarr", "with_sim": "true"})
    assert [n.exec for n in nodes] == ["recorder_node", "sim_node"]
    assert "store:=a.zarr" in nodes[0].ros_args
    nodes = load_launch_file(ROOT / "launch/record.launch.yaml", {"store": "a.zarr"})
    assert [n.exec for n in nodes] == ["recorder_node"]
    nodes = load_launch_file(ROOT / "launch/robot_policy.launch.yaml",
                             {"policy": "p.onnx", "image_topic": "/cam/image"})
    assert "image:=/cam/image" in nodes[0].ros_args
    with pytest.raises(LaunchError, match="policy"):
        load_launch_file(ROOT / "launch/robot_policy.launch.yaml", {})
    with pytest.raises(LaunchError, match="declares no argument"):
        load_launch_file(ROOT / "launch/robot_policy.launch.yaml", {"policy": "p", "polcy": "q"})
    with pytest.raises(LaunchError, match="NAME:=VALUE"):
        parse_launch_args(["policy=p"])


def test_setup_py_console_scripts_match_the_launcher():
    text = (ROOT / "setup.py").read_text()
    for exe, module in EXECUTABLES.items():
        assert f'"{exe} = {module}:main"' in text


def _relay_launch(tmp_path: Path) -> Path:
    f = tmp_path / "relay.launch.yaml"
    f.write_text(yaml.safe_dump({"launch": [
        {"arg": {"name": "dim", "default": "3"}},
        {"node": {"pkg": "vmerpo", "exec": "relay_node", "name": "relay_a",
                  "param": [{"name": "action_dim", "value": "$(var dim)"}]}},
        {"node": {"pkg": "vmerpo", "exec": "relay_node", "name": "relay_b"}},
    ]}))
    return f


def _start_launcher(f: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vmerpo", "launch", str(f), *args, "--stop-timeout", "5"],
                            cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _wait_children(proc, n: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(proc.pid)
        if len(kids) >= n:
            return kids
        time.sleep(0.1)
    raise AssertionError("launcher did not start its nodes")


@pytest.mark.ros
def test_vmerpo_launch_forwards_ctrl_c(tmp_path):
    proc = _start_launcher(_relay_launch(tmp_path), "dim:=2")
    try:
        kids = _wait_children(proc, 2)
        time.sleep(2.0)  # let the nodes come up
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    for k in kids:
        assert not Path(f"/proc/{k}").exists() or "zombie" in Path(f"/proc/{k}/status").read_text()
    assert "started relay_a" in out and "action_dim:=2" in out


@pytest.mark.ros
def test_vmerpo_launch_exits_nonzero_when_a_node_dies(tmp_path):
    proc = _start_launcher(_relay_launch(tmp_path))
    try:
        kids = _wait_children(proc, 2)
        time.sleep(1.0)
        os.kill(kids[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "exited with code -9" in out


def test_colcon_build_installs_nodes_launch_and_config(tmp_path):
    colcon = shutil.which("colcon") or str(Path(sys.executable).with_name("colcon"))
    if not Path(colcon).exists():
        print("colcon not installed: pip install colcon-core colcon-ros colcon-python-setup-py")
        pytest.skip("colcon not installed (pip install colcon-core colcon-ros colcon-python-setup-py)")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "vmerpo").symlink_to(ROOT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    inst = tmp_path / "install" / "vmerpo"
    for exe in EXECUTABLES:
        assert (inst / "lib" / "vmerpo" / exe).is_file(), f"{exe} not installed"
    share = inst / "share" / "vmerpo"
    for f in LAUNCH_FILES:
        assert (share / "launch" / f.name).is_file()
    for f in (ROOT / "config").glob("*.yaml"):
        assert (share / "config" / f.name).is_file()
    assert (share / "package.xml").is_file()
    assert (inst / "share" / "ament_index" / "resource_index" / "packages" / "vmerpo").is_file()
