"""The typed build manifest: the JSON keys stay as they were, and older or damaged manifests read tolerantly."""

from __future__ import annotations

import json

from generator.core.manifest import Manifest, ModelEntry, VersionEntry

SIGNATURE = {
    "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "dtype": "FP32", "shape": [-1, 2]}],
}
VERSION = {
    "cache_key": "abc",
    "cc_model_filenames": None,
    "details": {"opset": 17},
    "files": {"model.onnx": "0" * 64},
    "framework": "onnx",
    "model_file": "model.onnx",
    "optimize": {"kept": ["simplify"], "warnings": ["fp16 rejected"]},
    "parity": None,
    "platform": "onnxruntime_onnx",
    "signature": SIGNATURE,
    "source": "model.onnx",
    "source_files": {"model.onnx": "0" * 64},
    "user_files": None,
}
MANIFEST = {
    "device": {"gpus": None, "kind": "cpu"},
    "libraries": {"onnx": "1.17.0"},
    "models": {
        "m": {
            "config_sha256": "1" * 64,
            "sample_files": {"perf_analyzer_data.json": "2" * 64},
            "tuned": {"file": "generator.tuned.yaml", "trial": "run/3", "settings": {"max_batch_size": 16}},
            "versions": {"1": VERSION},
        }
    },
    "tool": "tritongen",
    "tool_version": "0.1.0",
}


def test_round_trip_writes_the_same_keys() -> None:
    manifest = Manifest.from_dict(json.loads(json.dumps(MANIFEST)))
    assert manifest.to_dict() == MANIFEST
    entry = manifest.version("m", 1)
    assert entry is not None
    assert entry.optimized_passes == ["simplify"]
    assert entry.optimize_warnings == ["fp16 rejected"]
    assert manifest.version("m", 2) is None
    assert manifest.version("other", 1) is None


def test_unreadable_manifests_read_as_empty() -> None:
    for data in (None, [], "text", {"models": []}, {"models": None}):
        assert Manifest.from_dict(data).models == {}


def test_an_older_entry_takes_defaults() -> None:
    entry = VersionEntry.from_dict({"signature": SIGNATURE, "platform": "onnxruntime_onnx"})
    assert entry is not None
    assert entry.user_files is None  # not recorded by builds before it existed
    assert entry.model_file is None
    assert entry.cache_key == "" and entry.files == {}
    assert entry.optimized_passes == [] and entry.optimize_warnings == []


def test_an_unreadable_version_is_left_out_but_its_model_stays_known() -> None:
    model = ModelEntry.from_dict({"versions": {"1": {"platform": "x"}, "2": VERSION, "3": "junk"}})
    assert list(model.versions) == ["2"]
    manifest = Manifest.from_dict({"models": {"m": {"versions": {"1": {"signature": None}}}}})
    assert set(manifest.models) == {"m"}  # still a model tritongen built: not carried over
    assert manifest.version("m", 1) is None


def test_a_model_built_before_tuned_settings_were_recorded_reads_as_untuned() -> None:
    model = ModelEntry.from_dict({"config_sha256": "1" * 64, "versions": {"1": VERSION}})
    assert model.tuned is None
    assert model.to_dict()["tuned"] is None
    assert ModelEntry.from_dict({"versions": {}, "tuned": "junk"}).tuned is None
