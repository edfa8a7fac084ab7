"""tritongen: from a YAML spec to a measured NVIDIA Triton Inference Server deployment.

Importing this package loads no ML framework; each exporter imports its framework when used.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
