"""The report side of a load test: figures, baseline comparison, the CI gate, and the written report.

Modules, each with one job:

* :mod:`~generator.loadtest.report.figures` the figures of a run and their names, units and better direction;
* :mod:`~generator.loadtest.report.baseline` the comparison with an earlier ``report.json``;
* :mod:`~generator.loadtest.report.gate` the ``--fail-if`` bounds a CI run is held to;
* :mod:`~generator.loadtest.report.write` and :mod:`~generator.loadtest.report.plots` report.json, CSV and HTML
  (the template ``report.html.j2`` ships in this package).

These modules work on the plain dicts a run produces, so they read and re-render any ``report.json``.
They import neither gevent nor Locust, nor anything from :mod:`generator.loadtest` (the load side, which
monkey-patches the standard library when imported); the load side imports them.
"""
