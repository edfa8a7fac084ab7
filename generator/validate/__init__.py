"""validate: check a model repository the way Triton will load it.

:mod:`~generator.validate.run` walks a repository and reports; the checks live one area per module:
:mod:`~generator.validate.config` (a model's config.pbtxt), :mod:`~generator.validate.artifacts` (the
model files against the config), :mod:`~generator.validate.ensembles` (an ensemble's steps and flow),
:mod:`~generator.validate.python` (Python-backend models).
"""
