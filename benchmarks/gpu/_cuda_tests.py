"""pytest plugin of ``check.py`` (``-p _cuda_tests``): keep only the CUDA tests.

A test is a CUDA test when it is marked ``cuda`` (``pytest -m cuda`` finds these), when
its name or module names ``cuda`` (``-k cuda`` finds these), or when it carries a
``skipif`` whose reason names CUDA or a GPU: the suite's CUDA tests predate the marker
and are spread over many files, and this catches each of them without editing them.
Tests that check the error raised *without* CUDA are selected too; on a GPU they skip.
"""


def is_cuda_test(item):
    if item.get_closest_marker("cuda") is not None:
        return True
    if "cuda" in item.nodeid.lower():
        return True
    for marker in item.iter_markers("skipif"):
        reason = str(marker.kwargs.get("reason", "")).lower()
        if "cuda" in reason or "gpu" in reason:
            return True
    return False


def pytest_collection_modifyitems(config, items):
    selected = [item for item in items if is_cuda_test(item)]
    deselected = [item for item in items if not is_cuda_test(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected
