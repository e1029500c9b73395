"""Offline checks of the NixOS VM tests, from what tests/static/render-vm-tests.nix rendered (JSON).

  vm_tests.py scripts RENDER OUT        write OUT/<test>/testScriptWithTypes (the driver's mypy input:
                                        prepend + machine type hints + script), OUT/<test>/test-script and
                                        OUT/<test>/builtins (pyflakes' PYFLAKES_BUILTINS)
  vm_tests.py headscale RENDER OUT BIN  start BIN (headscale) with every test's rendered settings in a
                                        network namespace without a route out; it must serve /health
  vm_tests.py selectors RENDER MANIFESTS
                                        every label selector a script passes to kubectl matches the labels
                                        of the objects the test deploys (MANIFESTS/<drv name>.yaml)
  vm_tests.py named RENDER MANIFESTS   every KIND/NAME a script passes to kubectl is deployed
  vm_tests.py cli RENDER NAME=BIN...   every NAME command line in the scripts parses with BIN
  vm_tests.py configs RENDER MANIFESTS OUT
                                        write the tka config.yaml of every ConfigMap a test deploys to OUT

Each prints one line per finding and exits 1 if there is one.
"""

import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

import vm_headscale

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "nixos-driver"


def load(render: str) -> dict:
    return json.loads(Path(render).read_text())


def pythonize(name: str) -> str:
    # nixos/lib/testing/driver.nix: a machine name becomes a Python identifier.
    head = name[:1] if re.match(r"[A-z_]", name[:1]) else "_"
    return head + re.sub(r"[^A-z0-9_]", "_", name[1:])


def scripts(render: str, out: str) -> int:
    prepend = (DRIVER / "prepend.py").read_text()
    symbols = (DRIVER / "driver-symbols").read_text().strip()
    for name, test in load(render).items():
        d = Path(out) / name
        d.mkdir(parents=True, exist_ok=True)
        machines = [pythonize(m) for m in test["machines"]]
        if len(machines) == 1 and "machine" not in test["machines"]:
            machines.append("machine")
        # As driver.nix writes it: the prepend, then one `echo` line each for the VM hints, the container
        # hints (none here) and the VLAN hints (the nodes are on the default VLAN 1), then the script.
        hints = " ".join(f"{m}: QemuMachine;" for m in machines)
        (d / "testScriptWithTypes").write_text(prepend + hints + "\n\n" + "vlan1: VLan" + "\n" + test["script"])
        (d / "test-script").write_text(test["script"])
        (d / "builtins").write_text(",".join(machines) + "," + symbols)
        flags = [k for k in ("skipTypeCheck", "skipLint") if test[k]]
        (d / "skipped").write_text(" ".join(flags))
    return 0


# ------------------------------------------------------------------------------------------------ manifests
def documents(paths: list[Path]) -> list[dict]:
    docs: list[dict] = []
    for p in paths:
        if not p.exists():
            raise SystemExit(f"FAIL  {p.name} was not built (see above)")
        docs += [d for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]
    return docs


def manifests_of(test: dict, mdir: str) -> list[Path]:
    return [Path(mdir) / (Path(drv).name.removesuffix(".drv")) for drv in test["manifests"]]


def labelled(docs: list[dict], resource: str, namespace: str | None) -> list[dict]:
    """The label sets a `kubectl get RESOURCE` selector is matched against: pods are the pod templates of
    the workloads (and bare Pods), other resources the objects of that kind."""
    out = []
    pods = resource in ("pod", "pods", "po")
    for d in docs:
        meta = d.get("metadata") or {}
        if namespace is not None and meta.get("namespace", "default") != namespace:
            continue
        kind = str(d.get("kind", "")).lower()
        if pods:
            template = ((d.get("spec") or {}).get("template") or {}).get("metadata") or {}
            if kind in ("deployment", "statefulset", "daemonset", "replicaset", "job"):
                out.append(template.get("labels") or {})
            elif kind == "pod":
                out.append(meta.get("labels") or {})
        elif resource.rstrip("s") == kind or resource == kind:
            out.append(meta.get("labels") or {})
    return out


SELECTOR = re.compile(r"(?:^|\s)(?:-l|--selector)[ =]([^\s\"']+)")


def kubectl_selectors(script: str):
    """(line number, selector, resource, namespace) for every kubectl call with a label selector."""
    for number, line in enumerate(script.splitlines(), 1):
        for match in SELECTOR.finditer(line):
            call = line[: match.start()]
            call = call[call.rfind("kubectl"):] if "kubectl" in call else call
            words = call.replace('"', " ").replace("'", " ").split()
            ns = None
            for i, w in enumerate(words[:-1]):
                if w in ("-n", "--namespace"):
                    ns = words[i + 1]
            verbs = [i for i, w in enumerate(words) if w in ("get", "delete", "wait", "describe", "label")]
            resource = words[verbs[0] + 1] if verbs and verbs[0] + 1 < len(words) else "pods"
            yield number, match.group(1), resource.split("/")[0], ns


def matches(selector: str, labels: dict) -> bool:
    for term in selector.split(","):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif labels.get(term) is None:
            return False
    return True


def selectors(render: str, mdir: str) -> int:
    failures = 0
    for name, test in load(render).items():
        docs = documents(manifests_of(test, mdir))
        for number, selector, resource, ns in kubectl_selectors(test["script"]):
            if re.search(r"[{}()]", selector):
                failures += 1
                print(f"FAIL  {name}: script line {number}: selector {selector} is computed; write it literally")
                continue
            candidates = labelled(docs, resource, ns)
            label = f"{name}: script line {number}: kubectl {resource} -l {selector}" + (f" -n {ns}" if ns else "")
            if any(matches(selector, labels) for labels in candidates):
                print(f"ok    {label} matches the deployed manifests")
            else:
                failures += 1
                seen = sorted({json.dumps(c, sort_keys=True) for c in candidates})
                print(f"FAIL  {label} matches none of the deployed {resource}: their labels are")
                for s in seen or ["(no such objects)"]:
                    print(f"      {s}")
    return 1 if failures else 0


KINDS = {"deployment": "Deployment", "deploy": "Deployment", "statefulset": "StatefulSet",
         "daemonset": "DaemonSet", "service": "Service", "svc": "Service", "configmap": "ConfigMap"}
NAMED = re.compile(r"\b(" + "|".join(KINDS) + r")/([a-z0-9][a-z0-9.-]*)")


def named(render: str, mdir: str) -> int:
    """Every KIND/NAME a script passes to kubectl (rollout status deployment/x, logs deployment/x, …)
    names an object the test deploys."""
    failures = 0
    for name, test in load(render).items():
        docs = documents(manifests_of(test, mdir))
        have = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in docs}
        for number, line in enumerate(test["script"].splitlines(), 1):
            if "kubectl" not in line:
                continue
            for kind, obj in NAMED.findall(line):
                label = f"{name}: script line {number}: kubectl … {kind}/{obj}"
                if (KINDS[kind], obj) in have:
                    print(f"ok    {label} is deployed")
                else:
                    failures += 1
                    print(f"FAIL  {label}: the test deploys no {KINDS[kind]} {obj}")
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------------ commands
UNKNOWN = "\x00"


METHODS = {"succeed", "fail", "execute", "wait_until_succeeds", "wait_until_fails"}


def command_strings(script: str) -> list[tuple[int, str]]:
    """The shell commands the script runs on its machines (the arguments of succeed, fail, execute,
    wait_until_*, also through a script function that passes a parameter on to one of them), with f-string
    parts that name a script-level string constant filled in and any other part as UNKNOWN."""
    tree = ast.parse(script)
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and len(n.targets) == 1
              for t in n.targets if isinstance(t, ast.Name)
              and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}

    def method_calls(root: ast.AST) -> list[ast.Call]:
        return [n for n in ast.walk(root) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and n.func.attr in METHODS]

    def leading_name(arg: ast.expr) -> str | None:
        """The variable a command expression starts with: `cmd`, `cmd + "…"`, `f"{cmd} …"`."""
        while isinstance(arg, ast.BinOp):
            arg = arg.left
        if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.FormattedValue):
            arg = arg.values[0].value
        return arg.id if isinstance(arg, ast.Name) else None

    # Parameters of script functions that are (the start of) a machine command, by function and position.
    forwarded = {}
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        used = {leading_name(a) for c in method_calls(fn) for a in c.args}
        positions = [i for i, a in enumerate(fn.args.args) if a.arg in used]
        if positions:
            forwarded[fn.name] = positions
    roots: list[ast.AST] = [a for c in method_calls(tree) for a in c.args]
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
        roots += [call.args[i] for i in forwarded.get(call.func.id, []) if i < len(call.args)]

    out = []
    for root in roots:
        inner = {id(v) for n in ast.walk(root) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(root):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inner:
                out.append((node.lineno, node.value))
            elif isinstance(node, ast.JoinedStr):
                text = ""
                for part in node.values:
                    if isinstance(part, ast.Constant):
                        text += str(part.value)
                    elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) \
                            and part.value.id in consts:
                        text += consts[part.value.id]
                    else:
                        text += UNKNOWN
                out.append((node.lineno, text))
    return sorted(set(out))


def invocations(text: str, tool: str) -> list[list[str]]:
    """The argument lists `tool` is run with in the shell command `text` (pipelines, lists, $(…))."""
    found = []
    for segment in re.split(r"\$\(|[;|&()]+", text):
        try:
            words = shlex.split(segment)
        except ValueError:
            continue
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if words[:2] == ["k3s", "kubectl"]:
            words = words[1:]
        if not words or words[0] != tool:
            continue
        args = []
        for w in words[1:]:
            if re.match(r"^[0-9]*[<>]", w):
                break
            args.append(w.replace(UNKNOWN, "x"))
        found.append(args)
    return found


def cli(render: str, *tools: str) -> int:
    """Every tka/kubectl/tailscale command line of the scripts parses with the real binary: `BIN ARGS
    --help` exits 0 only when every subcommand and flag exists (tools given as NAME=BINARY)."""
    failures = 0
    for name, test in load(render).items():
        for spec in tools:
            tool, binary = spec.split("=", 1)
            seen = set()
            for number, text in command_strings(test["script"]):
                for args in invocations(text, tool):
                    key = " ".join(args)
                    if key in seen:
                        continue
                    seen.add(key)
                    run = subprocess.run([binary, *args, "--help"], capture_output=True, text=True)
                    label = f"{name}: script line {number}: {tool} {key}"
                    if run.returncode == 0:
                        print(f"ok    {label} parses")
                    else:
                        failures += 1
                        print(f"FAIL  {label}: {binary} says")
                        for line in (run.stderr or run.stdout).strip().splitlines()[:5]:
                            print(f"      {line}")
    return 1 if failures else 0


def configs(render: str, mdir: str, out: str) -> int:
    count = 0
    for name, test in load(render).items():
        for i, doc in enumerate(documents(manifests_of(test, mdir))):
            data = doc.get("data") or {}
            if doc.get("kind") == "ConfigMap" and "config.yaml" in data:
                path = Path(out) / f"{name}-{doc['metadata']['name']}-{i}.yaml"
                path.write_text(data["config.yaml"])
                count += 1
    if count == 0:
        print("FAIL  no ConfigMap with a config.yaml in the rendered manifests")
        return 1
    return 0


def main(argv: list[str]) -> int:
    commands = {"scripts": scripts, "headscale": vm_headscale.main, "selectors": selectors, "named": named,
                "cli": cli, "configs": configs}
    if len(argv) < 2 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
