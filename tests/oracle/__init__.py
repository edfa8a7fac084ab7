"""The server as the oracle: generated model configurations judged by validate and by the real Triton.

:mod:`~tests.oracle.strategies` draws cases (Hypothesis strategies over ``model_config.proto``, one per
area, with model files that match or do not); :mod:`~tests.oracle.runner` judges each by
``validate`` and by the embedded tritonserver (explicit model control, one server for many cases);
:mod:`~tests.oracle.tally` sums the verdicts per area against the bar. The CI sample is
``tests/integration/test_validate_oracle.py``; the large corpus is ``perf/bench_validate_agreement.py``.
"""
