"""Structure of the code base: the package layers, and the size limits of functions and classes.

    python perf/structure.py            # the figures: longest functions and classes, most branched, imports
    python perf/structure.py --check    # the rules CI holds (exit 1 and one line per breach)

Packages, lowest rank first (a package imports its own modules and lower ranks; never a higher rank, never
another package of the same rank):

    core < steps < spec < validate, push < serve < build, loadtest, deploy < tune < demo < cli < __main__

The rules: every import points down these ranks; no module imports another module's private names;
``generator/`` holds at most 4 top-level modules besides its packages; no function is over 90 lines or
McCabe complexity 18 (ruff's C901 checks the latter too); no class is over 300 lines.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "generator"

#: Rank of each package (and top-level module) of ``generator``; a higher rank may import a lower one.
RANKS = {
    "core": 0,  # errors, dtypes, Triton's facts, GPUs/CPUs, shipped resources, repository files, templating
    "steps": 1,  # the built-in pipeline steps' catalogue (the spec puts it into its models)
    "spec": 2,
    "validate": 3,
    "push": 3,
    "serve": 4,  # above push: serving from object storage first checks that the push completed
    "build": 5,  # runs validate on what it wrote
    "loadtest": 5,  # drives a served repository (serve's control client, the embedded server)
    "deploy": 5,
    "tune": 6,  # builds, serves and load-tests
    "demo": 7,
    "cli": 8,
    "__main__": 9,
}
MAX_TOP_LEVEL_MODULES = 4  # __init__, __main__, cli, demo
MAX_FUNCTION_LINES = 90
MAX_COMPLEXITY = 18
MAX_CLASS_LINES = 300


def package_of(module: str) -> str:
    """The package (or top-level module) of ``generator`` that ``module`` belongs to; "" for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def rank(module: str) -> int:
    return RANKS.get(package_of(module), 0)


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


def _complexity() -> list[tuple[int, str]]:
    """Every function's McCabe complexity, as ruff measures it."""
    result = subprocess.run(
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
    for item in json.loads(result.stdout):
        message = item["message"]  # "`name` is too complex (N > 0)"
        value = int(message.rsplit("(", 1)[1].split(" ", 1)[0])
        where = Path(item["filename"]).relative_to(ROOT)
        branched.append((value, f"{where}:{message.split('`')[1]}"))
    return sorted(branched, reverse=True)


def survey() -> dict[str, list]:
    """The figures and the breaches of the rules, read from the source."""
    functions: list[tuple[int, str]] = []
    classes: list[tuple[int, str]] = []
    upward: list[str] = []
    private: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            length = (getattr(node, "end_lineno", None) or 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((length, f"{module}.{node.name}"))
            elif isinstance(node, ast.ClassDef):
                classes.append((length, f"{module}.{node.name}"))
        for target, names in imports(tree, module):
            if not target.startswith("generator") or target == module:
                continue
            mine, theirs = package_of(module), package_of(target)
            if theirs and theirs != mine and (rank(target) > rank(module) or rank(target) == rank(module)):
                upward.append(f"{module} -> {target}")
            sibling = target.rsplit(".", 1)[0] if "." in target else target
            for name in names:
                if name.startswith("_") and not name.startswith("__") and target != sibling + "." + module:
                    private.append(f"{module} -> {target}.{name}")
    top_level = sorted(p.stem for p in PACKAGE.glob("*.py"))
    unranked = sorted(
        {
            p.stem if p.is_file() else p.name
            for p in PACKAGE.iterdir()
            if (p / "__init__.py").is_file() or p.suffix == ".py"
        }
        - set(RANKS)
        - {"__init__", "templates", "examples"}
    )
    return {
        "functions": sorted(functions, reverse=True),
        "classes": sorted(classes, reverse=True),
        "branched": _complexity(),
        "upward": upward,
        "private": private,
        "top_level": top_level,
        "unranked": unranked,
    }


def breaches(found: dict[str, list]) -> list[str]:
    """One line per rule broken."""
    lines = [f"import up (or across) the package ranks: {line}" for line in found["upward"]]
    lines += [f"import of another module's private name: {line}" for line in found["private"]]
    lines += [
        f"package without a rank in perf/structure.py RANKS: generator/{name}" for name in found["unranked"]
    ]
    if len(found["top_level"]) > MAX_TOP_LEVEL_MODULES:
        lines.append(
            f"generator/ has {len(found['top_level'])} top-level modules ({', '.join(found['top_level'])}); "
            f"at most {MAX_TOP_LEVEL_MODULES}: put new code in the package of its verb"
        )
    lines += [
        f"function over {MAX_FUNCTION_LINES} lines: {name} ({length})"
        for length, name in found["functions"]
        if length > MAX_FUNCTION_LINES
    ]
    lines += [
        f"function over McCabe complexity {MAX_COMPLEXITY}: {name} ({value})"
        for value, name in found["branched"]
        if value > MAX_COMPLEXITY
    ]
    lines += [
        f"class over {MAX_CLASS_LINES} lines: {name} ({length})"
        for length, name in found["classes"]
        if length > MAX_CLASS_LINES
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any rule is broken (what CI runs)")
    args = parser.parse_args()
    found = survey()
    broken = breaches(found)
    if args.check:
        for line in broken:
            print(f"structure: {line}")
        if not broken:
            print(
                f"structure: ok ({len(RANKS)} ranked packages, 0 imports up the ranks, functions <= "
                f"{MAX_FUNCTION_LINES} lines and McCabe {MAX_COMPLEXITY}, classes <= {MAX_CLASS_LINES} lines)"
            )
        return 1 if broken else 0
    print("longest functions (lines):")
    for length, name in found["functions"][:5]:
        print(f"  {length:4d}  {name}")
    print("longest classes (lines):")
    for length, name in found["classes"][:5]:
        print(f"  {length:4d}  {name}")
    print("most branched functions (McCabe complexity):")
    for value, name in found["branched"][:5]:
        print(f"  {value:4d}  {name}")
    print(f"top-level modules: {len(found['top_level'])} ({', '.join(found['top_level'])})")
    print(f"imports pointing up (or across) the package ranks: {len(found['upward'])}")
    for line in found["upward"]:
        print(f"  {line}")
    print(f"imports of another module's private names: {len(found['private'])}")
    for line in found["private"]:
        print(f"  {line}")
    print(f"rules broken: {len(broken)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
