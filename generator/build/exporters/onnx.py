"""ONNX source: an existing ONNX file, checked with onnx.checker and taken as is (its inputs and outputs
renamed where the spec gives a ``source_name``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from generator.build.exporters.base import ExportResult
from generator.build.exporters.naming import apply_source_names
from generator.core.errors import ExportError
from generator.core.signature import read_onnx_signature
from generator.core.triton import DEFAULT_MODEL_FILENAMES, ONNX_PLATFORM
from generator.spec.models import ModelSpec


def external_data_files(path: Path) -> list[str]:
    """Relative locations of the external-data files an ONNX model refers to."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations: list[str] = []
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in locations:
                locations.append(entry.value)
    return locations


class OnnxExporter:
    """Copies a checked ONNX file (and any external-data files beside it) into the version directory."""

    framework = "onnx"

    def export(self, model: ModelSpec, source: Path, version_dir: Path) -> ExportResult:
        """Check ``source`` with onnx.checker and copy it to ``version_dir/model.onnx``, tensors renamed
        from their ``source_name`` to their spec ``name``.

        Raises:
            ExportError: the file is not valid ONNX, or a ``source_name`` is not one of its tensors.
        """
        import onnx

        try:
            onnx.checker.check_model(str(source))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(
                f"model '{model.name}': {source} is not a valid ONNX model ({first}); re-export it"
            ) from None
        version_dir.mkdir(parents=True, exist_ok=True)
        target = version_dir / DEFAULT_MODEL_FILENAMES[ONNX_PLATFORM]
        shutil.copyfile(source, target)
        files = [target]
        for location in external_data_files(source):
            data_target = version_dir / location
            data_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.parent / location, data_target)
            files.append(data_target)
        apply_source_names(model, target)
        signature = read_onnx_signature(target)
        return ExportResult(
            files=files,
            platform=ONNX_PLATFORM,
            signature=signature,
            reference=None,
            details={"opset": signature.details.get("opset"), "onnx": onnx.__version__},
        )
