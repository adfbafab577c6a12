"""Our outputs against a peer library's own (the interop and gated-SAE tests): each check
records its largest difference, and a module's differences are printed at its end (-s)."""

import numpy as np
import pytest
import torch

ATOL = 1e-5  # float32 weights, the peers computing in float32
# The largest |ours - peer| seen per check since the last report.
MAX_DIFFERENCES = {}


def close(name, ours, theirs, atol=ATOL):
    """Assert ``ours`` equals the peer's ``theirs`` (a tensor or array) and record the
    largest difference under ``name``."""
    theirs = theirs.detach().numpy() if torch.is_tensor(theirs) else theirs
    MAX_DIFFERENCES[name] = float(np.max(np.abs(ours - theirs)))
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=1e-5, err_msg=name)


@pytest.fixture(scope="module", autouse=True)
def report_peer_differences():
    """Print the module's largest differences, for the record, when it ends."""
    yield
    for name, value in sorted(MAX_DIFFERENCES.items()):
        print(f"max |ours - peer| {name}: {value:.2e}")
    MAX_DIFFERENCES.clear()
