"""A build in a child process: the one entry point, and its result, for a caller that must not build in
its own process.

``tune`` runs the load side under gevent (Locust), which does not mix with the build's own export worker
process, and keeps the frameworks out of the process that measures; it builds through
:func:`build_in_child`. Both sides of the contract live here:

* the parent, :func:`build_in_child`, starts ``python -m generator.build.child REQUEST RESULT`` (the
  request as JSON: spec, output, device, templates) and reads the result file back: a
  :class:`ChildBuild`, or the build's own error raised again in the parent (same class, same problems);
* the child, :func:`run_child`, runs :func:`generator.build.run.build` and writes the result file:
  ``{"ok": true, "repository": ..., "models": {name: status}, "warnings": [...], "seconds": ...}`` or
  ``{"ok": false, "error": "SpecError", "problems": [...]}``.

The result travels in a file, not on the child's output, which the frameworks and the export worker
also write to.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.core import errors
from generator.core.errors import GeneratorError, first_line, os_error_line

__all__ = ["ChildBuild", "build_in_child", "run_child"]

#: Exit code of a child that was interrupted (Ctrl-C reaches the whole process group).
_INTERRUPTED = 130


@dataclass(frozen=True)
class ChildBuild:
    """What a build in a child process wrote (the parts of its :class:`~generator.build.run.BuildReport`
    a caller in another process needs).

    Attributes:
        repository: The repository written.
        models: Each model's status, ``"exported"`` or ``"reused"``.
        warnings: The build's warnings, one line each.
        seconds: How long the build took.
    """

    repository: Path
    models: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def build_in_child(
    spec_path: str | Path | None,
    output: str | Path | None = None,
    device: str = "cpu",
    templates: str | Path | None = None,
) -> ChildBuild:
    """Build the repository of ``spec_path`` in a child process, as :func:`generator.build.run.build` would.

    Args:
        spec_path: The spec (None: ``generator.yaml`` here, else the bundled example).
        output: The repository (None: the spec's ``repository``).
        device: ``cpu``, ``gpu`` or ``auto`` instance groups.
        templates: A directory of the user's own Jinja templates.

    Raises:
        GeneratorError: The build failed: the error the build raised in the child (its class, when it is
            one of :mod:`generator.core.errors`, and its problems); or the child ended without a result.
    """
    request = {
        "spec": None if spec_path is None else str(spec_path),
        "output": None if output is None else str(output),
        "device": device,
        "templates": None if templates is None else str(templates),
    }
    with tempfile.TemporaryDirectory(prefix="tritongen-build-") as scratch:
        result = Path(scratch) / "result.json"
        command = [sys.executable, "-m", __name__, json.dumps(request), str(result)]
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if not result.is_file():
            raise GeneratorError(
                f"the build exited with code {done.returncode}: {done.stderr.strip()[-300:]}"
            )
        payload = json.loads(result.read_text(encoding="utf-8"))
    if not payload["ok"]:
        kind = getattr(errors, payload["error"], GeneratorError)
        raise (kind if isinstance(kind, type) and issubclass(kind, GeneratorError) else GeneratorError)(
            *payload["problems"]
        )
    return ChildBuild(Path(payload["repository"]), payload["models"], payload["warnings"], payload["seconds"])


def _build(request: dict[str, Any]) -> dict[str, Any]:
    """Run the build a request asks for; the result file's content, failures included."""
    from generator.build.run import build

    try:
        report = build(request["spec"], request["output"], request["device"], templates=request["templates"])
    except GeneratorError as error:
        return {"ok": False, "error": type(error).__name__, "problems": error.problems}
    except OSError as error:  # the file system refused: a path too long, no space, no permission
        return {"ok": False, "error": "GeneratorError", "problems": [os_error_line(error)]}
    except Exception as error:
        logging.getLogger(__name__).exception("the build failed")
        line = f"the build failed with an internal error: {first_line(error)} (run `build` on its own with --debug)"
        return {"ok": False, "error": "GeneratorError", "problems": [line]}
    return {
        "ok": True,
        "repository": str(report.repository),
        "models": {model.name: model.status for model in report.models},
        "warnings": list(report.warnings),
        "seconds": report.seconds,
    }


def run_child(request_json: str, result_path: str | Path) -> int:
    """The child's side: run the build ``request_json`` asks for and write its result to ``result_path``.

    Returns:
        The child's exit code: 0 built, 1 failed (the result file says why), 130 interrupted (no result).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    try:
        payload = _build(json.loads(request_json))
    except KeyboardInterrupt:
        return _INTERRUPTED
    target = Path(result_path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(partial, target)
    return 0 if payload["ok"] else 1


if __name__ == "__main__":
    sys.exit(run_child(sys.argv[1], sys.argv[2]))
