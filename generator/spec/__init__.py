"""The spec: its models (:mod:`~generator.spec.models`), their loading and field-path errors, the name
checks (:mod:`~generator.spec.names`), typed backend parameters, and the tuned settings beside a spec
(:mod:`~generator.spec.tuned`).
"""
