"""Tune: search a model's serving settings on a live Triton and write the winner back.

Modules, each with one job:

* :mod:`~generator.tune.space` the settings searched, the space of them, and a point as a config;
* :mod:`~generator.tune.search` the strategies (``grid``; ``quick``, a hill climb), ask and tell;
* :mod:`~generator.tune.objective` the objective and the constraints, in the load test's figures;
* :mod:`~generator.tune.trials` one model's search: its trials loaded and measured;
* :mod:`~generator.tune.ledger` one model's trials and its part of the report, written after every trial;
* :mod:`~generator.tune.confirm` the confirmation: the best candidates and the start config measured again;
* :mod:`~generator.tune.report` ``tune.json`` and ``report.html``;
* :mod:`~generator.tune.scratch` the scratch copy's owner record, and clearing those of killed tunes;
* :mod:`~generator.tune.run` the orchestrator behind ``python -m generator tune``.

Importing this package imports nothing heavy; :mod:`~generator.tune.run` imports the harness (Locust).
"""
