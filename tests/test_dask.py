"""dask arrays through transform, inverse_transform and sparse_encode; runs on a LocalCluster."""

import os
import pickle
import signal
import sys
import time

import joblib
import numpy as np
import pytest
import torch

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402  (a dependency of distributed)
import dask  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from sklearn_sparsegap import (  # noqa: E402
    GradientSparseCoder,
    LarsDictionaryLearning,
    MLPEncoder,
    SAEEncoder,
    SAEPlusITO,
    make_sparse_dictionary_data,
    mcc_scorer,
    sparse_encode,
)
from sklearn_sparsegap.activations import extract_activations, load_activations  # noqa: E402

# The helpers below run on worker processes, which cannot import this file by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_COMPONENTS, N_FEATURES = 12, 8


@pytest.fixture(scope="module")
def data():
    X, dictionary, codes = make_sparse_dictionary_data(
        700, n_components=N_COMPONENTS, n_features=N_FEATURES, n_nonzero_coefs=2, random_state=0
    )
    return X, dictionary, codes


def _estimators():
    sae = SAEEncoder(n_components=N_COMPONENTS, max_iter=30, random_state=0, device="cpu")
    return {
        "sae": sae,
        "mlp": MLPEncoder(n_components=N_COMPONENTS, hidden_layer_sizes=(8,), max_iter=30,
                          random_state=0, device="cpu"),
        "sparse_coding": GradientSparseCoder(n_components=N_COMPONENTS, max_iter=5,
                                             transform_max_iter=50, random_state=0, device="cpu"),
        "ito_fista": SAEPlusITO(sae, transform_max_iter=100, device="cpu"),
        "ito_omp": SAEPlusITO(sae, transform_algorithm="omp", transform_n_nonzero_coefs=2,
                              device="cpu"),
        "lars": LarsDictionaryLearning(n_components=N_COMPONENTS, max_iter=3, random_state=0),
    }  # fmt: skip


@pytest.fixture(scope="module")
def fitted(data):
    X = data[0]
    return {name: est.fit(X) for name, est in _estimators().items()}


_calls = []


def _counting(block):
    if len(block):  # dask calls it on an empty block to learn the output type
        _calls.append(len(block))
    return block


def _sleepy(block):
    time.sleep(0.4)
    return block


@pytest.mark.parametrize("name", list(_estimators()))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transform_of_a_dask_array_is_lazy_and_equals_the_in_memory_call(fitted, data, name,
                                                                         dtype):
    est = fitted[name]
    X = data[0].astype(dtype)
    _calls.clear()
    # Columns cut in two: transform rechunks them into one.
    lazy_X = da.from_array(X, chunks=(150, 4)).map_blocks(_counting, dtype=dtype)
    codes = est.transform(lazy_X)
    assert isinstance(codes, da.Array)
    assert not _calls, "transform computed something before .compute()"
    assert codes.dtype == dtype and codes.shape == (len(X), N_COMPONENTS)
    assert codes.chunks[0] == lazy_X.chunks[0]
    result = codes.compute(scheduler="sync")
    assert result.dtype == dtype
    expected = est.transform(X)
    # float64 is row-separable to rounding; float32 matmuls of other shapes round otherwise.
    tol = 1e-9 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(result, expected, atol=tol * max(1.0, np.abs(expected).max()))
    if name != "lars":
        back = est.inverse_transform(da.from_array(expected, chunks=(200, 5)))
        assert isinstance(back, da.Array) and back.dtype == dtype
        np.testing.assert_allclose(back.compute(scheduler="sync"), est.inverse_transform(expected),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip


def test_the_model_is_one_key_of_the_graph(fitted, data):
    est = fitted["ito_fista"]
    codes = est.transform(da.from_array(data[0], chunks=(100, -1)))
    graph = dict(codes.__dask_graph__())
    model_keys = [key for key in graph if str(key).startswith("sparsegap-saeplusito-")]
    assert len(model_keys) == 1
    assert codes.numblocks[0] == 7
    # Pickled, the graph holds one copy of the weights, not one per chunk.
    weights = est.components_.nbytes + est.encoder_.components_.nbytes
    assert len(cloudpickle.dumps(graph)) < 3 * weights + 200_000


def test_integer_dask_input_becomes_float64_and_wrong_columns_raise(fitted, data):
    est = fitted["sae"]
    X_int = da.from_array(np.rint(data[0] * 10).astype(np.int64), chunks=(350, -1))
    assert est.transform(X_int).dtype == np.float64
    with pytest.raises(ValueError, match="X has 5 columns but this estimator was fitted on 8"):
        est.transform(da.ones((10, 5), chunks=5))
    with pytest.raises(ValueError, match="n_components = 12"):
        est.inverse_transform(da.ones((10, 5), chunks=5))
    with pytest.raises(ValueError, match="2-D"):
        est.transform(da.ones(10, chunks=5))


def test_nan_in_a_chunk_raises_at_compute_time(fitted, data):
    X = data[0].copy()
    X[650, 3] = np.nan
    codes = fitted["sae"].transform(da.from_array(X, chunks=(100, -1)))
    with pytest.raises(ValueError, match="NaN"):
        codes.compute(scheduler="sync")


@pytest.mark.parametrize(
    "params",
    [{"algorithm": "omp", "n_nonzero_coefs": 2}, {"algorithm": "fista", "alpha": 0.01},
     {"algorithm": "lca", "alpha": 0.01, "positive": True}],
)  # fmt: skip
def test_sparse_encode_of_a_dask_array(data, params):
    X, dictionary, _ = data
    codes = sparse_encode(da.from_array(X, chunks=(200, -1)), dictionary, device="cpu", **params)
    assert isinstance(codes, da.Array) and codes.dtype == np.float64
    np.testing.assert_allclose(codes.compute(scheduler="sync"),
                               sparse_encode(X, dictionary, device="cpu", **params), atol=1e-9)


def test_sparse_encode_of_a_dask_array_with_a_warm_start(data):
    X, dictionary, _ = data
    init = sparse_encode(X, dictionary, algorithm="omp", n_nonzero_coefs=2, device="cpu")
    expected = sparse_encode(X, dictionary, alpha=0.01, init=init, max_iter=20, device="cpu")
    lazy_X = da.from_array(X, chunks=(300, -1))
    for start in (init, da.from_array(init, chunks=(100, 6))):
        codes = sparse_encode(lazy_X, dictionary, alpha=0.01, init=start, max_iter=20,
                              device="cpu")  # fmt: skip
        np.testing.assert_allclose(codes.compute(scheduler="sync"), expected, atol=1e-9)


def test_sparse_encode_dask_errors(data):
    X, dictionary, _ = data
    lazy_X = da.from_array(X, chunks=(300, -1))
    with pytest.raises(ValueError, match="return_n_iter"):
        sparse_encode(lazy_X, dictionary, return_n_iter=True)
    with pytest.raises(ValueError, match="init must have shape"):
        sparse_encode(lazy_X, dictionary, init=np.zeros((700, 3)))
    with pytest.raises(ValueError, match="n_nonzero_coefs=20 exceeds n_components=12"):
        sparse_encode(lazy_X, dictionary, algorithm="omp", n_nonzero_coefs=20)
    with pytest.raises(ValueError, match="dictionary has 8 columns"):
        sparse_encode(da.ones((10, 5), chunks=5), dictionary)


@pytest.mark.parametrize("storage", ["float32", "bfloat16"])
def test_load_activations_as_a_dask_array(tmp_path, storage):
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 6))
    tokens = torch.randint(50, (6, 20), generator=torch.Generator().manual_seed(0))
    path = extract_activations(model, [tokens[:3], tokens[3:]], module="1",
                               path=tmp_path / "acts", dtype=storage, shard_size=25,
                               progress=False)  # fmt: skip
    expected, _ = load_activations(path, dtype="float32")
    X, metadata = load_activations(path, as_dask=True, chunk_rows=32)
    assert isinstance(X, da.Array) and X.dtype == np.float32
    assert X.shape == (120, 6) and X.chunks[0] == (32, 32, 32, 24)
    assert len(metadata["position"]) == 120
    np.testing.assert_array_equal(X.compute(scheduler="sync"), expected)
    # The graph names the file, it does not carry its rows.
    assert len(pickle.dumps(dict(X.__dask_graph__()))) < 8_000
    X64, _ = load_activations(path, as_dask=True, dtype="float64")
    assert X64.dtype == np.float64 and X64.numblocks == (1, 1)
    np.testing.assert_array_equal(X64.compute(scheduler="sync"), expected.astype(np.float64))
    with pytest.raises(ValueError, match="chunk_rows"):
        load_activations(path, as_dask=True, chunk_rows=0)


# --------------------------------------------------------------- a real cluster, 2 processes
@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        yield client


def test_transform_on_a_local_cluster(client, fitted, data, tmp_path):
    X = data[0]
    est = fitted["ito_omp"]
    codes = est.transform(da.from_array(X, chunks=(100, -1)))
    np.testing.assert_allclose(client.compute(codes).result(), est.transform(X), atol=1e-9)
    # A set opened from disk is read by the workers themselves.
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, N_FEATURES))
    tokens = torch.randint(50, (4, 30), generator=torch.Generator().manual_seed(1))
    path = extract_activations(model, [tokens], module="1", path=tmp_path / "acts",
                               progress=False)
    in_memory, _ = load_activations(path)
    lazy, _ = load_activations(path, as_dask=True, chunk_rows=40)
    np.testing.assert_allclose(client.compute(est.transform(lazy)).result(),
                               est.transform(in_memory), atol=1e-5)


def test_a_worker_killed_mid_computation_loses_nothing(client, fitted, data):
    X = data[0]
    est = fitted["ito_fista"]
    codes = est.transform(da.from_array(X, chunks=(50, -1)).map_blocks(_sleepy, dtype=X.dtype))
    future = client.compute(codes)
    # Wait until both workers are busy, then kill one of them outright.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        processing = client.processing()
        if sum(bool(tasks) for tasks in processing.values()) == 2:
            break
        time.sleep(0.05)
    pids = client.run(os.getpid)
    victim = next(address for address, tasks in client.processing().items() if tasks)
    os.kill(pids[victim], signal.SIGKILL)
    result = future.result(timeout=120)
    assert not future.cancelled()
    assert pids[victim] not in client.run(os.getpid).values()
    # Every row once, in order: the lost chunks were recomputed, none doubled.
    assert result.shape == (len(X), N_COMPONENTS)
    np.testing.assert_allclose(result, est.transform(X), atol=1e-9)


def test_grid_search_on_dask_joblib_backend_equals_the_sequential_search(client, data):
    X, _, codes = data
    search = GridSearchCV(
        SAEEncoder(n_components=N_COMPONENTS, max_iter=20, random_state=0, device="cpu"),
        {"alpha": [0.05, 0.2]},
        scoring=mcc_scorer, cv=2,
    )  # fmt: skip
    sequential = GridSearchCV(**search.get_params(deep=False)).fit(X, codes)
    search.set_params(n_jobs=2)
    with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        search.fit(X, codes)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               sequential.cv_results_["mean_test_score"], atol=1e-6)
    assert search.best_params_ == sequential.best_params_
    # The fits ran as tasks on the cluster's workers (2 candidates x 2 folds, + refit).
    workers = {task["worker"] for task in stream.data}
    assert len(stream.data) >= 4 and workers <= set(client.scheduler_info()["workers"])
