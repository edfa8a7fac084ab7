"""The core every verb stands on: errors, dtypes, Triton's facts, GPUs and CPUs, the shipped resources,
a repository's files (manifest, staging, hashes), object storage URIs, and the Jinja templating.

Modules here import nothing from the rest of tritongen.
"""
