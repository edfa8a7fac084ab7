"""Execution accelerators of Triton's ONNX Runtime backend (``optimization.execution_accelerators``).

Only parameter names that backend accepts are allowed: the TensorRT execution provider's keys from
the backend's mapping table, the CUDA execution provider's options, and OpenVINO (CPU) without
parameters. Values are strings in config.pbtxt; booleans are written ``"1"``/``"0"``.
"""

from __future__ import annotations

import difflib
from typing import Any

#: accelerator name -> (config field, accepted parameter names)
TENSORRT_PARAMETERS = frozenset(
    {
        "precision_mode",
        "max_workspace_size_bytes",
        "int8_calibration_table_name",
        "int8_use_native_calibration_table",
        "trt_max_partition_iterations",
        "trt_min_subgraph_size",
        "trt_dla_enable",
        "trt_dla_core",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_dump_subgraphs",
        "trt_force_sequential_engine_build",
        "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_detailed_build_log",
        "trt_build_heuristics_enable",
        "trt_sparsity_enable",
        "trt_builder_optimization_level",
        "trt_auxiliary_streams",
        "trt_tactic_sources",
        "trt_extra_plugin_lib_paths",
        "trt_profile_min_shapes",
        "trt_profile_max_shapes",
        "trt_profile_opt_shapes",
        "trt_cuda_graph_enable",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
    }
)
CUDA_PARAMETERS = frozenset(
    {
        "cudnn_conv_use_max_workspace",
        "cudnn_conv1d_pad_to_nc1d",
        "cudnn_conv_algo_search",
        "use_ep_level_unified_stream",
        "gpu_mem_limit",
        "arena_extend_strategy",
        "do_copy_in_default_stream",
        "enable_cuda_graph",
        "tunable_op_enable",
        "tunable_op_tuning_enable",
        "prefer_nhwc",
        "use_tf32",
    }
)
ACCELERATORS: dict[str, tuple[str, frozenset[str]]] = {
    "tensorrt": ("gpu_execution_accelerator", TENSORRT_PARAMETERS),
    "cuda": ("gpu_execution_accelerator", CUDA_PARAMETERS),
    "openvino": ("cpu_execution_accelerator", frozenset()),
}
PRECISION_MODES = ("FP32", "FP16", "INT8")


def parameter_text(value: Any) -> str:
    """A parameter value as config.pbtxt holds it: booleans as "1"/"0", everything else as text."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def problems(name: str, parameters: dict[str, Any]) -> list[str]:
    """Why an accelerator entry would be refused by the ONNX Runtime backend (empty when fine)."""
    if name not in ACCELERATORS:
        return [
            f"execution accelerator '{name}' is unknown to the ONNX Runtime backend; use one of {', '.join(ACCELERATORS)}"
        ]
    _, accepted = ACCELERATORS[name]
    found = []
    for key, value in parameters.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.5)
            if close:
                hint = f"did you mean '{close[0]}'?"
            else:
                hint = f"accepted: {', '.join(sorted(accepted))}" if accepted else "it takes no parameters"
            found.append(f"accelerator '{name}' has no parameter '{key}'; {hint}")
        elif key == "precision_mode" and str(value) not in PRECISION_MODES:
            found.append(
                f"accelerator '{name}' precision_mode '{value}' is invalid; use {', '.join(PRECISION_MODES)}"
            )
    return found
