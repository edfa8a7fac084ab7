"""The load side of the load-test harness: Locust users on tritonclient, headless runs and sweeps.

Modules, each with one job:

* :mod:`~generator.loadtest.options` the load-test options, declared once for the CLI, Locust and the run;
* :mod:`~generator.loadtest.target` where the server is (URL, protocol, loopback check);
* :mod:`~generator.loadtest.payloads` request tensors from the model's metadata or a data file;
* :mod:`~generator.loadtest.datafiles` the samples of a ``--data`` file (.npz, .json, .txt);
* :mod:`~generator.loadtest.pipelines` the steps of an ensemble, walked through the server's configs;
* :mod:`~generator.loadtest.clients` prebuilt requests and the per-user connections that send them;
* :mod:`~generator.loadtest.grpcwire` gRPC unary calls on a plain socket (the HTTP/2 a load test needs);
* :mod:`~generator.loadtest.parameters` ``--param`` values and Triton's request parameters on the wire;
* :mod:`~generator.loadtest.sequences` stateful models: their config, sequence lengths, correlation IDs;
* :mod:`~generator.loadtest.streaming` a decoupled model's responses read from a gRPC stream;
* :mod:`~generator.loadtest.plan` the options a test runs with and what they resolve to, once per process;
* :mod:`~generator.loadtest.users` the Locust users (HTTP and gRPC);
* :mod:`~generator.loadtest.lanes` what a user sends to stateful and decoupled models: sequences, streams;
* :mod:`~generator.loadtest.shapes` step and ramp schedules, also as Locust load shapes;
* :mod:`~generator.loadtest.recorder` every request's latency and outcome, also across Locust workers;
* :mod:`~generator.loadtest.metrics` Triton's statistics deltas, Prometheus metrics, the server's processes;
* :mod:`~generator.loadtest.distributed` Locust's workers: processes on this machine, or expected from others;
* :mod:`~generator.loadtest.session` one load test driven through the phases, its windows and totals;
* :mod:`~generator.loadtest.swarm` the Locust environment, its runner (local or master) and the records;
* :mod:`~generator.loadtest.watchdog` ends a run early when the server, a worker or a user dies;
* :mod:`~generator.loadtest.run` the orchestrator behind ``python -m generator loadtest``;
* :mod:`~generator.loadtest.locustfile` the harness as a locustfile (``perf/locustfile.py``, the workers).

Importing this package imports nothing heavy; only :mod:`~generator.loadtest.users`,
:mod:`~generator.loadtest.run` and the modules they pull in import Locust, which monkey-patches the
standard library for gevent. The figures, baseline, gate and written report live in
:mod:`generator.loadtest.report`, which imports nothing from here.
"""
