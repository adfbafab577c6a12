"""Training and inference on on-disk arrays (``_batches.py``, the streamed path of the
estimators): minibatches read from disk, bounded samples, chunked checks."""

import functools

import numpy as np
import pytest
import torch

import sklearn_sparsegap._batches as batches_module
from sklearn_sparsegap import _dict_learning as dict_learning
from sklearn_sparsegap import _training as training
from sklearn_sparsegap import _validation
from sklearn_sparsegap import (
    GradientSparseCoder,
    MLPEncoder,
    SAEEncoder,
    dictionary_mcc,
    make_sparse_dictionary_data,
)
from sklearn_sparsegap._batches import (
    DiskBatches,
    TensorBatches,
    _file_layout,
    is_streamed,
    read_rows,
    take_rows,
)
from sklearn_sparsegap._validation import check_finite_rows


@pytest.fixture
def small_blocks(monkeypatch):
    """Stream every memmap, in blocks of 50 rows of 8 float32 and buffers of 200 rows."""
    monkeypatch.setattr(batches_module, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(batches_module, "BLOCK_BYTES", 50 * 32)
    monkeypatch.setattr(batches_module, "BUFFER_BYTES", 200 * 32)


def _on_disk(tmp_path, X, name="x.npy"):
    np.save(tmp_path / name, X)
    return np.load(tmp_path / name, mmap_mode="r")


def test_rows_are_read_from_the_file_at_the_right_offset(tmp_path):
    X = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    loaded = _on_disk(tmp_path, X)
    raw = np.memmap(tmp_path / "raw.bin", dtype=np.float64, mode="w+", shape=(40, 3), offset=24)
    raw[:] = X
    raw.flush()
    raw = np.memmap(tmp_path / "raw.bin", dtype=np.float64, mode="r", shape=(40, 3), offset=24)
    for array, expected in [(loaded, X), (loaded[7:31], X[7:31]), (raw[5:], X[5:])]:
        assert _file_layout(array) is not None
        np.testing.assert_array_equal(read_rows(array, 2, 9), expected[2:9])
    # Column slices and copy-on-write maps are read through the mapping instead.
    cow = np.load(tmp_path / "x.npy", mmap_mode="c")
    for array, expected in [(loaded[:, 1:], X[:, 1:]), (cow, X)]:
        assert _file_layout(array) is None
        np.testing.assert_array_equal(read_rows(array, 3, 11), expected[3:11])


def test_scattered_rows_of_a_memmap_are_read_from_its_file_not_its_mapping(tmp_path,
                                                                           monkeypatch):
    X = np.arange(50 * 4, dtype=np.float32).reshape(50, 4)
    loaded = _on_disk(tmp_path, X)
    calls = []
    preadv = batches_module.os.preadv

    def counting(*args):
        calls.append(args[2])
        return preadv(*args)

    monkeypatch.setattr(batches_module.os, "preadv", counting)
    index = [7, 3, 4, 5, 40, 3, 49]  # any order, runs and a repeat
    np.testing.assert_array_equal(take_rows(loaded, index), X[index])
    assert len(calls) == 5  # one read per run of the sorted rows: 3 / 3-5 / 7 / 40 / 49
    np.testing.assert_array_equal(take_rows(X, index), X[index])  # in memory: indexing
    assert take_rows(loaded, []).shape == (0, 4)


def test_disk_batches_cover_every_row_once_and_resume_mid_epoch(tmp_path):
    X = np.arange(1003 * 2, dtype=np.float32).reshape(1003, 2)
    source = DiskBatches(_on_disk(tmp_path, X), block_rows=37, buffer_rows=100)
    generator = torch.Generator().manual_seed(0)
    epoch = list(source.batches(64, generator=generator))
    assert len(epoch) == source.n_batches(64) == 16
    assert [len(b) for b in epoch[-2:]] == [64, 1003 - 15 * 64]
    np.testing.assert_array_equal(np.sort(torch.cat(epoch)[:, 0].numpy()), X[:, 0])
    # Not the file order: blocks and rows are shuffled.
    assert not np.array_equal(torch.cat(epoch)[:, 0].numpy(), X[:, 0])
    after = generator.get_state()
    resumed_generator = torch.Generator().manual_seed(0)
    resumed = list(source.batches(64, generator=resumed_generator, skip=6))
    assert len(resumed) == 10
    assert all(torch.equal(a, b) for a, b in zip(epoch[6:], resumed))
    assert torch.equal(resumed_generator.get_state(), after)


def test_disk_batches_read_the_target_with_the_rows(tmp_path):
    X = np.arange(300 * 2, dtype=np.float64).reshape(300, 2)
    target = X[:, :1] * 10
    source = DiskBatches(_on_disk(tmp_path, X), target, block_rows=16, buffer_rows=40)
    for rows, target_rows in source.batches(32, generator=torch.Generator().manual_seed(1)):
        assert rows.dtype == torch.float64
        torch.testing.assert_close(rows[:, :1] * 10, target_rows)


@pytest.mark.parametrize("n_samples", [1000, 1001, 1002])
def test_shards_split_the_rows_and_make_as_many_batches(tmp_path, n_samples):
    X = np.arange(n_samples, dtype=np.float32)[:, None].repeat(2, axis=1)
    disk = _on_disk(tmp_path, X)
    seen, counts = [], set()
    for rank in range(3):
        for source in (DiskBatches(disk, shard=(rank, 3), block_rows=30, buffer_rows=90),
                       TensorBatches(torch.from_numpy(X), shard=(rank, 3))):
            epoch = list(source.batches(50, generator=torch.Generator().manual_seed(rank)))
            counts.add(len(epoch))
            rows = torch.cat(epoch)[:, 0].numpy()
            # An uneven shard completes its epoch with one of its own rows again.
            assert len(rows) == int(np.ceil(n_samples / 3))
            if isinstance(source, DiskBatches):
                seen.append(np.unique(rows))
    assert len(counts) == 1
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), X[:, 0])
    with pytest.raises(ValueError, match="shard"):
        DiskBatches(disk, shard=(3, 3))


def test_sae_fit_streams_a_memmap_without_loading_it(tmp_path, small_blocks, monkeypatch):
    X, dictionary, _ = make_sparse_dictionary_data(2048, random_state=1)
    disk = _on_disk(tmp_path, X.astype(np.float32))
    assert is_streamed(disk)
    seen = []
    original = np.asarray

    def recording_asarray(array, *args, **kwargs):
        if isinstance(array, np.memmap) and len(array) == len(disk):
            seen.append(array.shape)
        return original(array, *args, **kwargs)

    monkeypatch.setattr(np, "asarray", recording_asarray)
    sae = SAEEncoder(n_components=16, batch_size=128, max_iter=30, random_state=0,
                     device="cpu").fit(disk)
    monkeypatch.setattr(np, "asarray", original)
    assert seen == []  # the memmap was never converted whole
    assert sae.components_.dtype == np.float32 and sae.n_iter_ == 30
    assert sae.history_["step"][-1] == 30 * 16
    assert dictionary_mcc(dictionary, sae.components_) > 0.8
    # transform streams too, and gives the in-memory codes.
    np.testing.assert_allclose(sae.transform(disk), sae.transform(np.array(disk)), atol=1e-6)
    assert sae.score(disk) == pytest.approx(sae.score(np.array(disk)), rel=1e-5)
    # Same seed, same model.
    again = SAEEncoder(n_components=16, batch_size=128, max_iter=30, random_state=0,
                       device="cpu").fit(disk)
    np.testing.assert_array_equal(again.components_, sae.components_)


def test_a_float16_memmap_is_streamed_and_computed_in_float32(tmp_path, small_blocks):
    # Issue 31, finding 7: a float16 activation set trains (and encodes) in float32, not
    # at four times its bytes in float64; in memory too.
    X, _, _ = make_sparse_dictionary_data(600, random_state=3)
    disk = _on_disk(tmp_path, X.astype(np.float16))
    assert is_streamed(disk)
    batches = list(DiskBatches(disk).batches(128, generator=torch.Generator().manual_seed(0)))
    assert {b.dtype for b in batches} == {torch.float32}
    sae = SAEEncoder(n_components=16, batch_size=128, max_iter=2, random_state=0,
                     device="cpu").fit(disk)  # fmt: skip
    assert sae.components_.dtype == np.float32
    codes = sae.transform(disk)
    assert codes.dtype == np.float32
    in_memory = np.array(disk)
    np.testing.assert_allclose(codes, sae.transform(in_memory), atol=1e-6)
    assert sae.inverse_transform(codes.astype(np.float16)).dtype == np.float32
    assert SAEEncoder(n_components=16, max_iter=2, random_state=0,
                      device="cpu").fit(in_memory).components_.dtype == np.float32


def test_mlp_and_known_codes_stream(tmp_path, small_blocks):
    X, dictionary, codes = make_sparse_dictionary_data(1024, random_state=2)
    disk = _on_disk(tmp_path, X)
    mlp = MLPEncoder(n_components=16, batch_size=128, max_iter=5, random_state=0,
                     device="cpu").fit(disk)
    assert np.isfinite(mlp.transform(disk)).all()
    # The least-squares decoder of known codes is fitted from streamed moments: the
    # same as on the whole array.
    streamed = SAEEncoder(target="codes", batch_size=128, max_iter=2, random_state=0,
                          device="cpu").fit(disk, codes)
    in_memory = SAEEncoder(target="codes", batch_size=128, max_iter=2, random_state=0,
                           device="cpu").fit(X, codes)
    np.testing.assert_allclose(streamed.components_, in_memory.components_, atol=1e-8)
    np.testing.assert_allclose(streamed.intercept_, in_memory.intercept_, atol=1e-8)


def test_full_batch_on_a_streamed_memmap_asks_for_a_batch_size(tmp_path, small_blocks):
    X, _, _ = make_sparse_dictionary_data(300, random_state=0)
    with pytest.raises(ValueError, match="batch_size"):
        SAEEncoder(max_iter=1, device="cpu").fit(_on_disk(tmp_path, X))


@pytest.mark.parametrize("bad_row, value, word", [(0, np.nan, "NaN"), (437, np.inf, "infinity"),
                                                  (999, -np.inf, "infinity")])
def test_a_memmap_with_a_bad_row_is_rejected_with_its_index(tmp_path, monkeypatch, bad_row,
                                                            value, word):
    monkeypatch.setattr(batches_module, "IN_MEMORY_BYTES", 0)
    X = np.ones((1000, 8), dtype=np.float32)
    X[bad_row, 3] = value
    disk = _on_disk(tmp_path, X)
    reads = []
    original = batches_module._RowReader.read

    def recording_read(self, start, stop, out=None):
        reads.append(stop - start)
        return original(self, start, stop, out)

    monkeypatch.setattr(batches_module._RowReader, "read", recording_read)
    # Blocks of 100 rows: the file is checked in pieces, never read whole.
    monkeypatch.setattr(_validation, "iter_row_blocks",
                        functools.partial(batches_module.iter_row_blocks, block_bytes=100 * 32))
    with pytest.raises(ValueError, match=f"X contains {word} at row {bad_row}"):
        SAEEncoder(batch_size=64, device="cpu").fit(disk)
    assert reads and max(reads) == 100
    fitted = SAEEncoder(n_components=4, max_iter=1, device="cpu").fit(np.eye(8))
    with pytest.raises(ValueError, match=f"row {bad_row}"):
        fitted.transform(disk)
    with pytest.raises(ValueError, match=f"codes contains {word} at row {bad_row}"):
        check_finite_rows(disk, "codes")


class Interrupted(Exception):
    pass


def _interrupted_fit(monkeypatch, fit, step=23):
    """Run ``fit()`` until optimiser step ``step``, where it is interrupted."""
    original = training.CountFlops.on_step_end

    def interrupt(self, state):
        original(self, state)
        if state.step == step:
            raise Interrupted

    monkeypatch.setattr(training.CountFlops, "on_step_end", interrupt)
    with pytest.raises(Interrupted):
        fit()
    monkeypatch.setattr(training.CountFlops, "on_step_end", original)


@pytest.mark.parametrize("on_disk", [True, False], ids=["disk", "memory"])
@pytest.mark.parametrize("Estimator", [SAEEncoder, MLPEncoder])
def test_an_interrupted_fit_resumes_to_the_uninterrupted_model(tmp_path, small_blocks,
                                                               monkeypatch, on_disk, Estimator):
    X, _, _ = make_sparse_dictionary_data(640, random_state=3)
    X = _on_disk(tmp_path, X.astype(np.float32)) if on_disk else X.astype(np.float32)
    params = dict(n_components=12, batch_size=64, max_iter=4, resample_dead_every=15,
                  random_state=0, device="cpu")
    # The held-out history and the dead-latent tracker resume too.
    X_val = make_sparse_dictionary_data(64, random_state=4)[0].astype(np.float32)
    reference = Estimator(**params).fit(X, X_val=X_val)
    path = tmp_path / "fit.ckpt"
    # Step 23 is mid-epoch (10 steps per epoch), after the save at step 21.
    _interrupted_fit(monkeypatch, lambda: Estimator(
        **params, checkpoint_path=path, checkpoint_every=7).fit(X, X_val=X_val))
    assert torch.load(path, weights_only=False)["step"] == 21
    resumed = Estimator(**params, checkpoint_path=path, checkpoint_every=7).fit(X, X_val=X_val)
    assert "val_fvu" in resumed.history_
    assert resumed.dead_fraction_ == reference.dead_fraction_
    np.testing.assert_array_equal(resumed.components_, reference.components_)
    for got, expected in zip(resumed.coefs_, reference.coefs_):
        np.testing.assert_array_equal(got, expected)
    for key in reference.history_:
        np.testing.assert_array_equal(resumed.history_[key], reference.history_[key])
    assert resumed.n_iter_ == reference.n_iter_ == 4
    assert resumed.training_flops_ == reference.training_flops_


@pytest.mark.parametrize("on_disk", [True, False], ids=["disk", "memory"])
def test_an_interrupted_minibatch_dictionary_fit_resumes_to_the_uninterrupted_one(
        tmp_path, small_blocks, monkeypatch, on_disk):
    X, _, _ = make_sparse_dictionary_data(640, random_state=5)
    X = _on_disk(tmp_path, X.astype(np.float32)) if on_disk else X.astype(np.float32)
    # 48 atoms for 8 features and statistics of one batch: atoms fall unused and are
    # resampled at most steps, so the resampling generator has to resume too.
    monkeypatch.setattr(dict_learning, "_ONLINE_MEMORY_ROWS", 64)
    params = dict(n_components=48, batch_size=64, max_iter=4, fit_algorithm="omp",
                  transform_n_nonzero_coefs=3, tol=0.0, random_state=0, device="cpu")
    reference = GradientSparseCoder(**params).fit(X)
    path = tmp_path / "coder.ckpt"
    # Step 23 is mid-epoch (10 steps per epoch), after the save at step 21.
    _interrupted_fit(monkeypatch, lambda: GradientSparseCoder(
        **params, checkpoint_path=path, checkpoint_every=7).fit(X))
    assert torch.load(path, weights_only=False)["step"] == 21
    resumed = GradientSparseCoder(**params, checkpoint_path=path, checkpoint_every=7).fit(X)
    np.testing.assert_array_equal(resumed.components_, reference.components_)
    for key in reference.history_:
        np.testing.assert_array_equal(resumed.history_[key], reference.history_[key])
    assert resumed.n_iter_ == reference.n_iter_ == 4
    assert resumed.training_flops_ == reference.training_flops_
    assert resumed.dead_fraction_ == reference.dead_fraction_
    # Other data or parameters are refused; a full-batch fit cannot checkpoint.
    with pytest.raises(ValueError, match="alpha=0.03 there, 0.1 here"):
        GradientSparseCoder(**params, alpha=0.1, checkpoint_path=path).fit(X)
    with pytest.raises(ValueError, match="checkpoint_path is only used by minibatch"):
        GradientSparseCoder(**{**params, "batch_size": None}, checkpoint_path=path).fit(
            np.asarray(X))


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    X, _, _ = make_sparse_dictionary_data(200, random_state=0)
    path = tmp_path / "fit.ckpt"
    params = dict(n_components=8, batch_size=50, max_iter=2, random_state=0, device="cpu",
                  checkpoint_path=path)
    SAEEncoder(**params, alpha=0.25).fit(X)
    with pytest.raises(ValueError, match=r"alpha=0\.25 there, 0\.5 here"):
        SAEEncoder(**params, alpha=0.5).fit(X)
    params["alpha"] = 0.25
    with pytest.raises(ValueError, match="X=.*there"):
        SAEEncoder(**params).fit(X[::-1])
    # A finished checkpoint resumed with the same configuration is the same model.
    np.testing.assert_array_equal(SAEEncoder(**params).fit(X).components_,
                                  SAEEncoder(**{**params, "checkpoint_path": None}).fit(X).components_)
    # Held-out rows make the history: other ones (or none) are refused as well.
    X_val = X[:20]
    SAEEncoder(**{**params, "checkpoint_path": tmp_path / "val.ckpt"}).fit(X, X_val=X_val)
    with pytest.raises(ValueError, match=r"X_val=.*there, '<unset>' here"):
        SAEEncoder(**{**params, "checkpoint_path": tmp_path / "val.ckpt"}).fit(X)
    with pytest.raises(ValueError, match="X_val=.*crc32"):
        SAEEncoder(**{**params, "checkpoint_path": tmp_path / "val.ckpt"}).fit(
            X, X_val=X[20:40])


def test_gradient_sparse_coder_minibatch_alternation_streams(tmp_path, small_blocks):
    X, dictionary, _ = make_sparse_dictionary_data(2048, random_state=0)
    disk = _on_disk(tmp_path, X.astype(np.float32))
    params = dict(n_components=16, batch_size=256, max_iter=10, fit_algorithm="omp",
                  transform_n_nonzero_coefs=3, random_state=0, device="cpu")
    coder = GradientSparseCoder(**params).fit(disk)
    assert coder.batch_size_ == 256 and coder.n_iter_ == 10
    assert coder.components_.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(coder.components_, axis=1), 1, rtol=1e-5)
    assert dictionary_mcc(dictionary, coder.components_) > 0.8
    # The objective goes down from the first epoch, and the codes reconstruct.
    assert coder.history_["loss"][-1] < coder.history_["loss"][0]
    assert coder.history_["step"][-1] == 10 * 8
    codes = coder.transform(disk)
    assert np.mean(np.square(X - codes @ coder.components_)) < 0.2 * np.mean(np.square(X))
    # dead_fraction_ counts atoms unused on the last epoch (the window), as the SAEs do.
    assert coder.dead_fraction_ == coder.history_["dead_fraction"][-1]
    assert coder.dead_fraction_ == pytest.approx((codes == 0).all(axis=0).mean(), abs=1 / 16)
    # In memory with batch_size: the same algorithm.
    in_memory = GradientSparseCoder(**params).fit(X)
    assert dictionary_mcc(dictionary, in_memory.components_) > 0.8
    with pytest.raises(ValueError, match="batch_size"):
        GradientSparseCoder(**{**params, "batch_size": None}).fit(disk)
    with pytest.raises(ValueError, match="adam"):
        GradientSparseCoder(**{**params, "fit_algorithm": "adam"}).fit(disk)


def test_held_out_rows_on_disk_are_streamed_and_checked_in_blocks(tmp_path, small_blocks):
    X, _, _ = make_sparse_dictionary_data(1024, random_state=3)
    X = X.astype(np.float32)
    disk = _on_disk(tmp_path, X[768:], name="val.npy")
    sae = SAEEncoder(n_components=16, batch_size=128, max_iter=3, random_state=0,
                     device="cpu").fit(X[:768], X_val=disk)  # fmt: skip
    in_memory = SAEEncoder(n_components=16, batch_size=128, max_iter=3, random_state=0,
                           device="cpu").fit(X[:768], X_val=X[768:])  # fmt: skip
    for key in ("val_fvu", "val_l0", "val_dead_fraction"):
        np.testing.assert_allclose(sae.history_[key], in_memory.history_[key], rtol=1e-5)
    bad = X[768:].copy()
    bad[123, 4] = np.nan
    with pytest.raises(ValueError, match="X_val contains NaN at row 123"):
        sae.fit(X[:768], X_val=_on_disk(tmp_path, bad, name="bad.npy"))
