"""Structure figures of the code base: the longest function, the most branched function (McCabe), the
imports that point up the layers of docs/architecture.md, and imports of another module's private names.

    python perf/structure.py

Layers, lowest first (a module may import its own layer and the ones below):
leaf helpers -> spec -> tuned -> runners -> exporters -> verify -> optimize -> config
-> validate/repository/server -> the load-test report (loadreport) -> build and the harness -> demo -> cli.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "generator"

#: Rank of each module (longest prefix wins); higher ranks may import lower ones, not the reverse.
RANKS = {
    "generator": 0,
    "generator.errors": 0,
    "generator.dtypes": 0,
    "generator.resources": 0,
    "generator.gpus": 0,
    "generator.triton": 0,
    "generator.reaper": 0,
    "generator.backends": 0,
    "generator.accelerators": 1,
    "generator.signature": 1,
    "generator.steps": 1,  # the built-in steps' catalogue, below spec (which puts it into the spec)
    "generator.spec": 2,
    "generator.spec_names": 2,  # the spec's name checks (spec imports it; it reads spec's field paths)
    "generator.tuned": 3,  # above spec; beside runners, neither imports the other
    "generator.runners": 3,
    "generator.input_values": 3,  # beside runners: what inputs a model takes (ranges, lengths)
    "generator.exporters.base": 4,
    "generator.exporters": 5,
    "generator.worker": 5,
    "generator.verify": 6,
    "generator.optimize": 7,
    "generator.config": 8,
    "generator.pipelines": 8,  # built-in steps resolved, ensemble configs derived from their steps
    "generator.config_checks": 9,
    "generator.artifact_checks": 9,
    "generator.ensemble_checks": 9,
    "generator.python_checks": 9,
    "generator.validate": 10,
    "generator.repository": 10,
    "generator.manifest": 10,
    "generator.sample_data": 10,
    "generator.server": 10,
    "generator.storage": 10,  # push and serve side by side: serve checks that a push completed
    "generator.loadreport": 11,
    "generator.capacity": 11,  # fleet size from a measured report (beside loadreport)
    "generator.build": 12,
    "generator.deploy": 12,  # Kubernetes manifests: an orchestrator beside build
    "generator.harness": 12,
    "generator.tune": 13,
    "generator.demo": 14,
    "generator.cli": 15,
    "generator.__main__": 16,
}


def rank(module: str) -> int:
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        if prefix in RANKS:
            return RANKS[prefix]
    return 0


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.AST, module: str) -> list[tuple[str, list[str]]]:
    found = []
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [a.name for a in node.names]
            found.append((base, names))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def main() -> None:
    longest: list[tuple[int, str]] = []
    upward: list[str] = []
    private: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                longest.append((length, f"{module}.{node.name}"))
        for target, names in imports(tree, module):
            if not target.startswith("generator") or target == module:
                continue
            if rank(target) > rank(module):
                upward.append(f"{module} -> {target}")
            sibling = target.rsplit(".", 1)[0] if "." in target else target
            for name in names:
                if name.startswith("_") and not name.startswith("__") and target != sibling + "." + module:
                    private.append(f"{module} -> {target}.{name}")
    longest.sort(reverse=True)
    complexity = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            str(PACKAGE),
            "--select",
            "C901",
            "--output-format",
            "json",
            "--config",
            "lint.mccabe.max-complexity = 0",
            "--exit-zero",
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    branched = []
    for item in json.loads(complexity.stdout):
        message = item["message"]  # "`name` is too complex (N > 0)"
        value = int(message.rsplit("(", 1)[1].split(" ", 1)[0])
        where = Path(item["filename"]).relative_to(ROOT)
        branched.append((value, f"{where}:{message.split('`')[1]}"))
    branched.sort(reverse=True)
    print("longest functions (lines):")
    for length, name in longest[:5]:
        print(f"  {length:4d}  {name}")
    print("most branched functions (McCabe complexity):")
    for value, name in branched[:5]:
        print(f"  {value:4d}  {name}")
    print(f"functions over complexity 18: {sum(1 for v, _ in branched if v > 18)}")
    print(f"imports pointing up the layers: {len(upward)}")
    for line in upward:
        print(f"  {line}")
    print(f"imports of another module's private names: {len(private)}")
    for line in private:
        print(f"  {line}")


if __name__ == "__main__":
    main()
