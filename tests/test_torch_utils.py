"""Tests for the numpy <-> torch boundary (_torch_utils)."""

import warnings

import numpy as np
import pytest
import torch

from sklearn_sparsegap._torch_utils import (
    make_generator,
    numpy_dtype,
    resolve_device,
    to_numpy,
    to_tensor,
    torch_dtype,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
requires_no_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the error raised without CUDA"
)


# ----------------------------------------------------------------------- devices


def test_auto_device_is_cuda_when_available_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_cpu_device(device):
    resolved = resolve_device(device)
    assert isinstance(resolved, torch.device)
    assert resolved.type == "cpu"


@requires_no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1", torch.device("cuda")])
def test_cuda_without_cuda_raises(device):
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device(device)


@pytest.mark.parametrize(
    "device", ["tpu", "gpu", "CPU", "", "cuda:-1", "mps", "meta", 0, None, 1.5]
)
def test_unknown_device_raises(device):
    with pytest.raises(ValueError, match="device"):
        resolve_device(device)


@requires_cuda
def test_cuda_device_on_a_gpu():
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@requires_cuda
def test_to_tensor_and_back_on_a_gpu():
    array = np.arange(6.0).reshape(2, 3)
    tensor = to_tensor(array, device=resolve_device("cuda"))
    assert tensor.device.type == "cuda"
    back = to_numpy(tensor * 2)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, 2 * array)


# ------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    "dtype, expected_numpy, expected_torch",
    [
        (np.float64, np.float64, torch.float64),
        (np.dtype(">f8"), np.float64, torch.float64),  # byte order does not matter
        (np.float32, np.float32, torch.float32),
        (np.dtype(">f4"), np.float32, torch.float32),
        # 16-bit floats are computed in float32 (issue 31); otherwise scikit-learn's
        # rule: everything that is not float32 is computed in float64.
        (np.float16, np.float32, torch.float32),
        (np.int64, np.float64, torch.float64),
        (np.int32, np.float64, torch.float64),
        (np.uint8, np.float64, torch.float64),
        (np.bool_, np.float64, torch.float64),
        ("float64", np.float64, torch.float64),
    ],
)
def test_dtype_policy(dtype, expected_numpy, expected_torch):
    assert numpy_dtype(dtype) == expected_numpy
    assert torch_dtype(dtype) == expected_torch
    tensor = to_tensor(np.ones((2, 2), dtype=dtype), device="cpu")
    assert tensor.dtype == expected_torch
    assert to_numpy(tensor).dtype == expected_numpy


def test_to_tensor_explicit_dtype():
    array = np.arange(4.0)
    assert to_tensor(array, device="cpu", dtype=torch.float32).dtype == torch.float32
    assert to_tensor(array, device="cpu", dtype=np.float32).dtype == torch.float32
    widened = to_tensor(array.astype(np.float32), device="cpu", dtype=np.float64)
    assert widened.dtype == torch.float64
    # A torch dtype without a numpy counterpart.
    half = to_tensor(array.astype(">f8"), device="cpu", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    np.testing.assert_array_equal(half.float().numpy(), array)


# ------------------------------------------------------------------- conversions


def test_to_tensor_copies():
    array = np.arange(6.0).reshape(2, 3)
    original = array.copy()
    tensor = to_tensor(array, device="cpu")
    tensor += 100.0
    np.testing.assert_array_equal(array, original)
    array[0, 0] = -1.0
    assert tensor[0, 0].item() == 100.0


def test_to_tensor_accepts_read_only_arrays_without_warning():
    array = np.arange(6.0).reshape(2, 3)
    array.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = to_tensor(array, device="cpu")
    tensor.mul_(2.0)  # the tensor is writable and independent
    np.testing.assert_array_equal(array, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(tensor.numpy(), 2 * array)


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[::-1],  # negative strides
        lambda a: a[:, ::2],  # non-contiguous
        np.asfortranarray,
        lambda a: a.astype(">f8"),  # non-native byte order
        lambda a: a.tolist(),
    ],
    ids=["reversed", "strided", "fortran", "big-endian", "list"],
)
def test_to_tensor_layouts(make):
    base = np.arange(12.0).reshape(3, 4)
    source = make(base)
    tensor = to_tensor(source, device="cpu")
    np.testing.assert_array_equal(tensor.numpy(), np.asarray(source, dtype=np.float64))
    assert tensor.is_contiguous()


def test_to_numpy_returns_an_independent_cpu_copy():
    tensor = torch.arange(4.0, requires_grad=True) * 2
    array = to_numpy(tensor)
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, [0.0, 2.0, 4.0, 6.0])
    leaf = torch.zeros(3)
    out = to_numpy(leaf)
    out[0] = 5.0
    assert leaf[0].item() == 0.0
    assert array.flags.writeable


def test_round_trip_preserves_values():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        array = rng.standard_normal((5, 3)).astype(dtype)
        back = to_numpy(to_tensor(array, device="cpu"))
        assert back.dtype == dtype
        np.testing.assert_array_equal(back, array)


# -------------------------------------------------------------------- generators


def test_make_generator_is_reproducible():
    first = torch.randn(5, generator=make_generator(0))
    second = torch.randn(5, generator=make_generator(0))
    other = torch.randn(5, generator=make_generator(1))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_make_generator_from_random_state_instance():
    # A RandomState is consumed like any scikit-learn random_state: two generators from
    # the same instance differ, the same seeded sequence repeats.
    rs = np.random.RandomState(0)
    a, b = make_generator(rs), make_generator(rs)
    assert not torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    rs = np.random.RandomState(0)
    c = make_generator(rs)
    d = make_generator(np.random.RandomState(0))
    assert torch.equal(torch.rand(4, generator=c), torch.rand(4, generator=d))


def test_make_generator_is_cpu_and_independent_of_the_global_seed():
    generator = make_generator(3)
    assert generator.device.type == "cpu"
    torch.manual_seed(123)
    x = torch.rand(3, generator=make_generator(3))
    torch.manual_seed(456)
    y = torch.rand(3, generator=make_generator(3))
    assert torch.equal(x, y)


def test_make_generator_none_gives_fresh_seeds():
    draws = {tuple(torch.rand(3, generator=make_generator(None)).tolist()) for _ in range(5)}
    assert len(draws) > 1


def test_make_generator_bad_random_state():
    with pytest.raises(ValueError, match="random_state"):
        make_generator("abc")
