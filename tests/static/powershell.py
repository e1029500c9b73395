"""Parses PowerShell scripts with tree-sitter-powershell and fails on any syntax error.

    python3 powershell.py FILE...

PowerShell itself cannot be installed on the machines this project is built on (no registry that serves
it is reachable), so the generated wrapper (`tka generate integration powershell`) is checked by a real
PowerShell grammar instead of being run. Each file must parse without ERROR or MISSING nodes and define a
function `tka`. As a guard against a parser that accepts anything, every file is also parsed with its last
closing brace removed, which must be reported as an error.
"""

import sys

import tree_sitter
import tree_sitter_powershell

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def errors(source: bytes) -> list[str]:
    found = []

    def walk(node):
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            text = node.text.decode(errors="replace").splitlines()[:1]
            found.append(f"{row + 1}:{col + 1}: {'missing' if node.is_missing else 'syntax error'} near {text!r}")
        for child in node.children:
            walk(child)

    tree = PARSER.parse(source)
    walk(tree.root_node)
    if tree.root_node.has_error and not found:
        found.append("syntax error (no position reported)")
    return found


def functions(source: bytes) -> list[str]:
    names = []

    def walk(node):
        if node.type == "function_statement":
            names.extend(c.text.decode() for c in node.children if c.type == "function_name")
        for child in node.children:
            walk(child)

    walk(PARSER.parse(source).root_node)
    return names


def main(paths: list[str]) -> int:
    bad = 0
    for path in paths:
        with open(path, "rb") as f:
            source = f.read()
        problems = errors(source)
        if "tka" not in functions(source):
            problems.append("no function named tka")
        broken = source[: source.rstrip().rfind(b"}")]
        if not errors(broken):
            problems.append("the parser accepted the script without its last '}': it cannot be trusted")
        for p in problems:
            print(f"{path}:{p}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
