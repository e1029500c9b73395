"""The headscale of each VM test, for real (used by vm_tests.py headscale RENDER OUT BIN).

Each test's rendered settings (nixpkgs' headscale module defaults plus the test's own) become headscale's
config file; the test peers' headscale serves with it in a network namespace that has no route out (the
VMs have no network either), with fresh private /var/lib and /run as the NixOS unit has. It must answer
/health. Then the script's own headscale commands run against it, as the headscale machine would run them:
every `headscale.succeed("…")` with literal commands, and every call with literal arguments of a function
the script defines that drives only the headscale machine (e.g. `authkey("alice", "tag:tka")`), in script
order, with the CLI configured as the NixOS module configures it (/etc/headscale/config.yaml).
"""

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import yaml


def materialize(value, files: Path):
    """Settings with every stub file (writeText) written to `files` and replaced by its path."""
    if isinstance(value, dict) and set(value) == {"stubFile", "text"}:
        path = files / value["stubFile"]
        path.write_text(value["text"])
        return str(path)
    if isinstance(value, dict):
        return {k: materialize(v, files) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v, files) for v in value]
    return value


def health_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/health"


class Machine:
    """The headscale VM as the script sees it: commands run with bash -euo pipefail in the server's network
    and mount namespaces, `headscale` being the CLI with the module's client config."""

    def __init__(self, pid: int, path: str, log: list[str]):
        self.pid, self.path, self.log = pid, path, log

    def execute(self, command: str, timeout: int | None = 900) -> tuple[int, str]:
        run = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-n", "--", "env", f"PATH={self.path}",
             "bash", "-c", f"set -euo pipefail; {command}"],
            capture_output=True, text=True, timeout=timeout)
        self.log.append(f"$ {command}\n{run.stdout}{run.stderr}")
        return run.returncode, run.stdout

    def succeed(self, *commands: str, timeout: int | None = None) -> str:
        out = ""
        for command in commands:
            status, text = self.execute(command, timeout)
            if status != 0:
                raise RuntimeError(f"command `{command}` failed (exit code {status})")
            out += text
        return out

    def fail(self, *commands: str, timeout: int | None = None) -> str:
        out = ""
        for command in commands:
            status, text = self.execute(command, timeout)
            if status == 0:
                raise RuntimeError(f"command `{command}` unexpectedly succeeded")
            out += text
        return out


def literal(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant)


def replay_steps(script: str, machine: str, others: set[str]) -> tuple[list[ast.FunctionDef], list[ast.Call]]:
    """The script's functions that drive only `machine` (not one of `others`), and the calls to replay,
    in script order."""
    tree = ast.parse(script)
    usable = {}
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef):
            names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
            if machine in names and not names & others:
                usable[fn.name] = fn
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not all(literal(a) for a in node.args):
            continue
        f = node.func
        on_machine = (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == machine
                      and f.attr in ("succeed", "fail", "execute") and node.args)
        inside = any(node.lineno >= fn.lineno and node.end_lineno <= fn.end_lineno for fn in usable.values())
        if (on_machine and not inside) or (isinstance(f, ast.Name) and f.id in usable):
            calls.append(node)
    calls.sort(key=lambda c: (c.lineno, c.col_offset))
    return list(usable.values()), calls


def replay(script: str, name: str, others: set[str], target: Machine) -> str | None:
    """None if every replayed step succeeds, else the first failure."""
    functions, calls = replay_steps(script, name, others)
    scope: dict = {name: target}
    exec(compile(ast.Module(body=functions, type_ignores=[]), "<test script>", "exec"), scope)
    for call in calls:
        source = ast.unparse(call)
        try:
            eval(compile(ast.Expression(body=call), "<test script>", "eval"), scope)
        except Exception as e:  # noqa: BLE001 - any failure of a step is the finding
            return f"script line {call.lineno}: {source}: {e}"
    return None if calls else "the script runs no headscale command with literal arguments"


def serve(binary: str, config: Path, tools: Path, url: str, log: Path, ns: str,
          then: Callable[[Machine], str | None]) -> str | None:
    """Runs headscale in namespace `ns`; None if it serves `url` within 30 s and `then` finds nothing."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        # The NixOS unit's state and runtime directories, fresh and private to this process.
        inner = (
            "mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /run && "
            "mkdir -p /var/lib/headscale /run/headscale && exec \"$0\" serve --config \"$1\""
        )
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", inner, binary, str(config)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    return f"headscale exited with {proc.returncode} before serving {url}"
                probe = subprocess.run(
                    ["ip", "netns", "exec", ns, sys.executable, "-c",
                     "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)", url],
                    capture_output=True)
                if probe.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    return f"{url} did not answer within 30 s"
                time.sleep(0.5)
            path = f"{tools}:{os.environ.get('PATH', '/usr/bin:/bin')}"
            return then(Machine(proc.pid, path, []))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main(render: str, out: str, binary: str) -> int:
    failures = 0
    tests = json.loads(Path(render).read_text())
    for name, test in tests.items():
        for node, hs in test["headscale"].items():
            others = set(test["machines"]) - {node}
            d = Path(out) / name / node
            (d / "bin").mkdir(parents=True, exist_ok=True)
            settings = materialize(hs["settings"], d)
            config = d / "headscale.yaml"
            config.write_text(yaml.safe_dump(settings, sort_keys=True))
            # nixos/modules/services/networking/headscale.nix: the CLI's /etc/headscale/config.yaml.
            cli = d / "cli.yaml"
            cli.write_text(yaml.safe_dump({"disable_check_updates": True, "unix_socket": settings["unix_socket"]}))
            wrapper = d / "bin" / "headscale"
            wrapper.write_text(f"#!/bin/sh\nexec {binary} --config {cli} \"$@\"\n")
            wrapper.chmod(0o755)
            steps: list[str] = []

            def exercise(machine: Machine) -> str | None:
                problem = replay(test["script"], node, others, machine)
                steps.extend(machine.log)
                return problem

            label = f"{name}: node {node}: headscale (nixpkgs {hs['version']}) with the test's settings"
            problem = serve(binary, config, d / "bin", health_url(settings["listen_addr"]),
                            d / "headscale.log", f"tka-static-{os.getpid()}", exercise)
            if problem is None:
                print(f"ok    {label} serves /health and runs the script's {len(steps)} headscale commands")
            else:
                failures += 1
                print(f"FAIL  {label}: {problem}")
                print(f"      config: {config}")
                tail = steps[-3:] if steps else (d / "headscale.log").read_text(errors="replace").splitlines()[-15:]
                for line in "\n".join(tail).splitlines()[-20:]:
                    print(f"      {line}")
    return 1 if failures else 0
