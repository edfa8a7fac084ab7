"""The report side of a load test: figures, baseline comparison, the CI gate, and the written report.

Modules, each with one job:

* :mod:`~generator.loadreport.figures` the figures of a run and their names, units and better direction;
* :mod:`~generator.loadreport.baseline` the comparison with an earlier ``report.json``;
* :mod:`~generator.loadreport.gate` the ``--fail-if`` bounds a CI run is held to;
* :mod:`~generator.loadreport.report` and :mod:`~generator.loadreport.plots` report.json, CSV and HTML
  (the template ``report.html.j2`` ships in this package).

These modules work on the plain dicts a run produces, so they read and re-render any ``report.json``.
They import neither gevent nor Locust, nor anything from :mod:`generator.harness` (the load side, which
monkey-patches the standard library when imported); the load side imports them.
"""
