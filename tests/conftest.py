"""Shared test configuration.

- Torch uses at most 2 threads: the CI machines have 2 cores, and oversubscription makes
  the small tensor workloads of the tests slower, not faster.
- Hypothesis runs a bounded number of examples without a per-example deadline (the first
  call of a numpy/torch routine can be slow), so property tests stay fast and not flaky.
  Set ``HYPOTHESIS_PROFILE=dev`` for a longer local search.
"""

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(min(2, torch.get_num_threads()))

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
