"""Start a ROS 2 YAML launch file's nodes where only the rclpy wheels are installed.

On a machine with ROS 2, `ros2 launch vmerpo sim_policy.launch.yaml` is the way. The PyPI
wheels have no `launch`/`launch_ros`, so `vmerpo launch FILE arg:=value` reads the same file
and starts its nodes as processes. It understands exactly what this package's launch files
use, and refuses anything else with a message rather than half-running it:

    launch: [ {arg: {name, default?, description?}},
              {node: {pkg: vmerpo, exec, name?, namespace?, output?, if?, unless?,
                      param: [{from: FILE} | {name, value}], remap: [{from, to}]}} ]
    substitutions: $(var NAME), $(find-pkg-share vmerpo), $(env NAME [DEFAULT])

Every child gets the shared-memory-only DDS environment (`netsafe.safe_ros_env`). Ctrl-C
(SIGINT) and SIGTERM are forwarded to the children, which get `stop_timeout_s` to exit
before SIGKILL. If a node exits while the others run, the rest are stopped and the exit
code is non-zero when that node failed. No ROS import here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robot_nodes.netsafe import safe_ros_env

PACKAGE = "vmerpo"
# exec name (setup.py console_scripts) -> module run with `python -m`
EXECUTABLES = {
    "policy_node": "robot_nodes.policy_node",
    "sim_node": "robot_nodes.sim_node",
    "recorder_node": "robot_nodes.recorder_node",
    "relay_node": "robot_nodes.relay_node",
}
_NODE_KEYS = {"pkg", "exec", "name", "namespace", "output", "if", "unless", "param", "remap"}
_SUBST = re.compile(r"\$\(([^()]*)\)")
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


class LaunchError(ValueError):
    """A launch file or argument this runner cannot honour (one line, names the problem)."""


@dataclass
class NodeProcess:
    """One node to start: its name, the module, and its ROS arguments."""

    name: str
    exec: str
    module: str
    ros_args: list[str] = field(default_factory=list)

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", self.module, "--ros-args", *self.ros_args]


def package_share(launch_file: Path) -> Path:
    """`$(find-pkg-share vmerpo)`: the installed share dir, else the tree holding the file."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        share = Path(prefix) / "share" / PACKAGE
        if prefix and (share / "package.xml").is_file():
            return share
    return launch_file.resolve().parent.parent


def parse_launch_args(argv: Sequence[str]) -> dict[str, str]:
    out = {}
    for a in argv:
        if ":=" not in a:
            raise LaunchError(f"launch argument {a!r} is not NAME:=VALUE")
        k, v = a.split(":=", 1)
        out[k.strip()] = v
    return out


def _substitute(text: Any, args: Mapping[str, str], share: Path) -> str:
    text = str(text)

    def one(m: re.Match) -> str:
        parts = m.group(1).split()
        if not parts:
            raise LaunchError(f"empty substitution in {text!r}")
        kind, rest = parts[0], parts[1:]
        if kind == "var" and len(rest) == 1:
            if rest[0] not in args:
                raise LaunchError(f"launch argument {rest[0]!r} is not declared or has no value; "
                                  f"pass {rest[0]}:=VALUE")
            return args[rest[0]]
        if kind == "find-pkg-share" and rest == [PACKAGE]:
            return str(share)
        if kind == "env" and len(rest) in (1, 2):
            value = os.environ.get(rest[0], rest[1] if len(rest) == 2 else None)
            if value is None:
                raise LaunchError(f"environment variable {rest[0]} is not set")
            return value
        raise LaunchError(f"substitution $({m.group(1)}) is not supported by `vmerpo launch` "
                          "(use `ros2 launch` on a ROS 2 install)")

    return _SUBST.sub(one, text)


def _condition(value: Any, args: Mapping[str, str], share: Path, what: str) -> bool:
    v = _substitute(value, args, share).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise LaunchError(f"{what}: condition {v!r} is not true/false")


def load_launch_file(path: str | os.PathLike, cli_args: Mapping[str, str]) -> list[NodeProcess]:
    """The nodes a launch file starts, with substitutions resolved."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"launch file {path} not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LaunchError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("launch"), list):
        raise LaunchError(f"{path}: expected a YAML launch file with a top-level `launch:` list")
    share = package_share(path)
    args: dict[str, str] = {}
    declared: set[str] = set()
    nodes: list[NodeProcess] = []
    for entry in doc["launch"]:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise LaunchError(f"{path}: each launch entry must be one action, got {entry!r}")
        (kind, body), = entry.items()
        if kind == "arg":
            name = str(body["name"])
            declared.add(name)
            if name in cli_args:
                args[name] = cli_args[name]
            elif "default" in body:
                args[name] = _substitute(body["default"], args, share)
        elif kind == "node":
            node = _node(body, args, share, path)
            if node is not None:
                nodes.append(node)
        else:
            raise LaunchError(f"{path}: action {kind!r} is not supported by `vmerpo launch` "
                              "(use `ros2 launch` on a ROS 2 install)")
    unknown = sorted(set(cli_args) - declared)
    if unknown:
        raise LaunchError(f"{path.name} declares no argument {', '.join(unknown)} "
                          f"(it has: {', '.join(sorted(declared))})")
    return nodes


def _node(body: Mapping[str, Any], args: Mapping[str, str], share: Path, path: Path) -> NodeProcess | None:
    extra = set(body) - _NODE_KEYS
    if extra:
        raise LaunchError(f"{path}: node attribute(s) {sorted(extra)} not supported by `vmerpo launch`")
    exe = str(body.get("exec", ""))
    if body.get("pkg") != PACKAGE or exe not in EXECUTABLES:
        raise LaunchError(f"{path}: can only start {PACKAGE}'s nodes ({', '.join(EXECUTABLES)}), "
                          f"not {body.get('pkg')}/{exe}")
    if "if" in body and not _condition(body["if"], args, share, exe):
        return None
    if "unless" in body and _condition(body["unless"], args, share, exe):
        return None
    name = _substitute(body.get("name", exe), args, share)
    ros_args = ["-r", f"__node:={name}"]
    if body.get("namespace"):
        ns = _substitute(body["namespace"], args, share)
        ros_args += ["-r", f"__ns:={ns if ns.startswith('/') else '/' + ns}"]
    files, values = [], []
    for p in body.get("param", []) or []:
        if "from" in p:
            f = Path(_substitute(p["from"], args, share))
            if not f.is_file():
                raise LaunchError(f"{path}: parameter file {f} not found")
            files += ["--params-file", str(f)]
        elif "name" in p and "value" in p:
            values += ["-p", f"{p['name']}:={_substitute(p['value'], args, share)}"]
        else:
            raise LaunchError(f"{path}: param entry {p!r} needs `from` or `name`+`value`")
    remaps = []
    for r in body.get("remap", []) or []:
        remaps += ["-r", f"{_substitute(r['from'], args, share)}:={_substitute(r['to'], args, share)}"]
    # --params-file before -p: later sources win, so launch arguments override the config.
    return NodeProcess(name, exe, EXECUTABLES[exe], ros_args + files + values + remaps)


class Launcher:
    """Runs NodeProcesses as children until interrupted or one of them exits."""

    def __init__(self, nodes: Sequence[NodeProcess], env: Mapping[str, str] | None = None,
                 stop_timeout_s: float = 5.0, out: Callable[[str], None] | None = None) -> None:
        if not nodes:
            raise LaunchError("the launch file starts no nodes (check its if/unless conditions)")
        self.nodes = list(nodes)
        self.env = safe_ros_env(env)
        self.stop_timeout_s = stop_timeout_s
        self.out = out or (lambda line: print(line, flush=True))
        self.procs: list[subprocess.Popen] = []
        self._stop = threading.Event()

    def _pump(self, name: str, stream) -> None:
        for line in iter(stream.readline, ""):
            self.out(f"[{name}] {line.rstrip()}")
        stream.close()

    def start(self) -> None:
        for n in self.nodes:
            # Own session: a terminal's Ctrl-C reaches the launcher only; it forwards once.
            p = subprocess.Popen(n.command(), env=self.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
            self.procs.append(p)
            threading.Thread(target=self._pump, args=(n.name, p.stdout), daemon=True).start()
            self.out(f"[launch] started {n.name} (pid {p.pid}): {' '.join(n.command()[1:])}")

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def wait(self) -> int:
        """Until a stop request or a child's exit; then stop everything. Exit code."""
        failed: tuple[str, int] | None = None
        while not self._stop.is_set():
            for n, p in zip(self.nodes, self.procs, strict=True):
                rc = p.poll()
                if rc is not None:
                    failed = (n.name, rc)
                    break
            if failed:
                break
            self._stop.wait(0.1)
        if failed:
            name, rc = failed
            self.out(f"[launch] node {name} exited with code {rc}; stopping the others")
        self.stop()
        if failed:
            return 1 if failed[1] != 0 else 0
        return 0

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + self.stop_timeout_s
        for n, p in zip(self.nodes, self.procs, strict=True):
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out(f"[launch] {n.name} did not stop in {self.stop_timeout_s}s; killing it")
                p.kill()
                p.wait(timeout=5)

    def run(self) -> int:
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            return self.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
