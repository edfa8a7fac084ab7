"""Load-test a Triton server with plain Locust, web UI or headless.

    locust -f perf/locustfile.py --host http://127.0.0.1:8000 --model digits_cnn            # web UI
    locust -f perf/locustfile.py --host http://127.0.0.1:8000 --model digits_cnn --protocol grpc \\
        --batch-size 8 --headless -u 8 -r 8 -t 30s
    locust -f perf/locustfile.py --host 127.0.0.1:8000 --model digits_cnn:3 --model digits_linear:1 \\
        --headless --load-shape step --sweep 1,2,4,8 --duration 10

Each user is a closed loop of inference requests built by tritonclient from the model's metadata on the
server (or from ``--data FILE``); ``locust -f perf/locustfile.py --help`` lists the options under
"tritongen". For a report with exact percentiles, Triton's server-side breakdown, resource figures and
a CI gate, run ``python -m generator loadtest`` instead.

To write user-like scenarios, subclass ``generator.loadtest.users.TritonHttpUser`` or ``TritonGrpcUser`` (they
are abstract, so importing them runs nothing) in a locustfile of your own, change ``wait_time`` or add
tasks, and ``import generator.loadtest.locustfile`` for the options.
"""

from generator.loadtest.locustfile import InferenceUser

__all__ = ["InferenceUser"]
