"""validate: check a model repository the way the Triton that serves it will load it.

:mod:`~generator.validate.run` walks a repository and reports errors, warnings and information. For each
model it reads the config with the schema of the serving Triton's version (:mod:`~generator.validate.schema`,
2.51 by default: the embedded server), applies Triton's auto-complete (:mod:`~generator.validate.autocomplete`,
on the rules of :mod:`generator.core.autocomplete`; a Python model's ``auto_complete_config`` runs in a child,
:mod:`~generator.validate.python_child`), then judges the completed config one area per module:
:mod:`~generator.validate.config` (names, dims, batching, instance groups, warm-up, parameters),
:mod:`~generator.validate.tensors` (reshape, tensor kinds, batch inputs and outputs, label files),
:mod:`~generator.validate.scheduling` (priorities and queue policies, sequence controls, strategies, state),
:mod:`~generator.validate.artifacts` (backend, runtime library, GPUs, versions, the model file's I/O),
:mod:`~generator.validate.ensembles` (an ensemble's steps and flow) and :mod:`~generator.validate.python`
(a Python model's model.py, parsed).
"""
