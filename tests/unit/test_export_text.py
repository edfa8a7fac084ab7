"""Export errors reach the user as one plain line: no terminal colour codes, no quoted tracebacks."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from generator.build.exporters.base import error_line, one_line
from generator.build.exporters.torch import export_failure
from generator.build.worker import ExportWorker
from generator.core.errors import ExportError

#: What torch.onnx.export raises for a module with data-dependent control flow (torch 2.13), shortened.
TORCH_MESSAGE = (
    "Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting the model to "
    "ONNX. Next steps:\n- Modify the model code for `torch.export.export` to succeed.\n\n"
    "## Exception summary\n\n<class 'torch.fx.experimental.symbolic_shapes.GuardOnDataDependentSymNode'>: "
    "Could not guard on data-dependent expression Eq(u0, 1) (unhinted: Eq(u0, 1)).  (Size-like symbols: none)\n\n"
    "consider using data-dependent friendly APIs\n\nThe following call raised this error:\n"
    '  File "/home/u/project/bad.py", line 5, in forward\n    if x.sum() > 0:\n\n'
    "(Refer to the full stack trace above for more information.)"
)


class TorchExportError(Exception):
    """Stands for torch's exception class of that name (same message shape)."""


def test_colour_codes_and_newlines_become_one_plain_line() -> None:
    assert one_line("a \x1b[96mb\x1b[0m\n\tc\x07d") == "a b c d"
    assert error_line(ValueError("\x1b[1mbold\x1b[0m first\nsecond")) == "ValueError: bold first"
    assert error_line(ValueError("")) == "ValueError"


def test_a_torch_export_failure_names_the_root_cause_and_the_users_line() -> None:
    assert export_failure(TorchExportError(TORCH_MESSAGE)) == (
        "GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(u0, 1) (unhinted: "
        "Eq(u0, 1)). (Size-like symbols: none) (at bad.py:5 in forward: if x.sum() > 0:)"
    )
    try:
        try:
            raise KeyError("\x1b[91mno kernel\x1b[0m for aten::foo")
        except KeyError as cause:
            raise TorchExportError(TORCH_MESSAGE.split("## Exception")[0]) from cause
    except TorchExportError as chained:
        assert export_failure(chained) == "KeyError: 'no kernel for aten::foo'"


def _coloured_error(*, progress: Callable[[str], None]) -> None:
    raise ExportError("model 'm': torch.onnx.export failed: \x1b[96mstep 1/3\x1b[0m\nTraceback (most recent")


class _Unpicklable(Exception):
    def __reduce__(self) -> None:
        raise pickle.PicklingError("no")


def _unpicklable(*, progress: Callable[[str], None]) -> None:
    raise _Unpicklable("\x1b[31mred\x1b[0m reason")


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (_coloured_error, "model 'm': torch.onnx.export failed: step 1/3 Traceback (most recent"),
        (_unpicklable, "model 'm': the export failed: tests.unit.test_export_text._Unpicklable: red reason"),
    ],
)
def test_the_export_process_hands_back_plain_lines(step: Callable[..., None], expected: str) -> None:
    with ExportWorker(in_process=False) as worker, pytest.raises(ExportError) as caught:
        worker.run("model 'm'", step, (), [], [], lambda stage: None)
    assert caught.value.problems == [expected]
