"""Shared test configuration: plain ``python -m pytest`` needs no environment variable.

- ``SCIPY_ARRAY_API=1`` is set here, before anything below imports scipy or scikit-learn:
  scipy reads it once, at import, and scikit-learn's ``check_array_api_input`` (run on
  every estimator by ``tests/test_common.py``) is skipped without it.
- Torch uses at most 2 threads: the CI machines have 2 cores, and oversubscription makes
  the small tensor workloads of the tests slower, not faster.
- Hypothesis profiles. ``ci`` (chosen when ``CI`` is set, e.g. ``CI=true``) is
  derandomised and writes no example database, so a CI run is reproducible and one
  failure cannot make later runs fail. ``local`` (the default elsewhere) draws new
  examples on every run and replays the failures it saved, so local runs keep searching.
  ``HYPOTHESIS_PROFILE=dev`` runs ten times more examples.
"""

import os
import sys

os.environ.setdefault("SCIPY_ARRAY_API", "1")

if "scipy" in sys.modules and os.environ["SCIPY_ARRAY_API"] == "1":
    # A pytest plugin imported scipy before this file could set the variable: scipy's
    # array API support is then off for the whole run, whatever the environment says.
    from scipy._lib import _array_api as _scipy_array_api

    if not _scipy_array_api.SCIPY_ARRAY_API:
        raise RuntimeError(
            "scipy was imported before tests/conftest.py could set SCIPY_ARRAY_API=1 "
            "(by a pytest plugin?); run with SCIPY_ARRAY_API=1 in the environment."
        )

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

_COMMON = {"max_examples": 30, "deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_COMMON)
settings.register_profile("local", **_COMMON)
settings.register_profile("dev", **{**_COMMON, "max_examples": 300})


def _in_ci():
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if _in_ci() else "local"))
