"""The compiled neuron kernels (toolchain/neurons/kernels/native) against the torch-op implementation they replace."""
import os

import pytest
import torch

from toolchain.neurons.kernels import native
from toolchain.neurons import run_neurons
from toolchain.neurons.subtractive import SubtractiveParams, subtractive_step
from toolchain.neurons.surrogates import get_surrogate

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler on this machine")


def _run(currents, params, surrogate, pool, use_native, monkeypatch, mask=None, seed=5):
    monkeypatch.setenv("SNNTC_NATIVE", "1" if use_native else "0")
    c = currents.detach().clone().requires_grad_()
    spikes, state = run_neurons(c, subtractive_step, params, surrogate, pool=pool, mask=mask)
    g = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(seed), dtype=spikes.dtype)
    (spikes * g).sum().backward()
    return spikes.detach(), state, c.grad


def _currents(dtype, channels_last, T=7, B=3, C=8, H=6):
    x = torch.randn(T, B, C, H, H, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 0.8
    if channels_last:
        x = x.reshape(T * B, C, H, H).contiguous(memory_format=torch.channels_last).reshape(T, B, C, H, H)
    return x


@needs_compiler
def test_kernels_build_and_load():
    assert native.library() is not None
    assert native.build().exists()


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pool", [0, 2])
@pytest.mark.parametrize("leak", [1.0, 0.9])
@pytest.mark.parametrize("surrogate", ["stdb", "linear", "arctan"])
def test_native_equals_torch_ops(dtype, channels_last, pool, leak, surrogate, monkeypatch):
    """Spikes, final state and spike counts bit for bit; gradients to rounding (the summation order of the
    surrogate's multiply-add may differ by an ulp)."""
    x = _currents(dtype, channels_last)
    params, sur = SubtractiveParams(0.7, leak), get_surrogate(surrogate)
    s_n, st_n, g_n = _run(x, params, sur, pool, True, monkeypatch)
    s_t, st_t, g_t = _run(x, params, sur, pool, False, monkeypatch)
    assert torch.equal(s_n, s_t) and s_n.stride() == s_t.stride()
    assert torch.equal(st_n.v, st_t.v) and torch.equal(st_n.dt, st_t.dt) and torch.equal(st_n.count, st_t.count)
    assert int(st_n.count.sum()) > 0
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(g_n, g_t, rtol=rtol, atol=rtol * float(g_t.abs().max()))


@needs_compiler
@pytest.mark.parametrize("pool", [0, 2])
def test_a_batch_of_one_channels_last(pool, monkeypatch):
    """B = 1, channels-last: torch gives the batch dimension an arbitrary stride; the kernels still run (and pool)
    and agree with the torch ops."""
    import toolchain.neurons.kernels.subtractive as kernel
    x = _currents(torch.float32, True, B=1)
    params, sur = SubtractiveParams(0.7, 1.0), get_surrogate("stdb")
    ran = []
    orig = kernel._native_forward
    monkeypatch.setattr(kernel, "_native_forward", lambda *a: ran.append(orig(*a)) or ran[-1])
    s_n, st_n, g_n = _run(x, params, sur, pool, True, monkeypatch)
    assert ran and ran[0] is not None                                     # compiled, not the fallback
    s_t, st_t, g_t = _run(x, params, sur, pool, False, monkeypatch)
    assert st_n.count is not None and int(st_n.count.sum()) > 0          # counts come from the kernel
    assert torch.equal(s_n, s_t) and torch.equal(st_n.v, st_t.v) and torch.equal(st_n.count, st_t.count)
    torch.testing.assert_close(g_n, g_t, rtol=1e-5, atol=1e-5 * float(g_t.abs().max()))


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("surrogate", ["stdb", "linear"])
def test_dropout_mask_applied_as_the_neurons_fire(use_native, surrogate, monkeypatch):
    """run_neurons(mask=m) = run_neurons() * m, forward and backward; the counts are the neurons' own spikes."""
    if use_native and native.compiler() is None:
        pytest.skip("no C compiler")
    x = _currents(torch.float64, True)
    mask = torch.nn.functional.dropout(torch.ones_like(x[0]), 0.5, True)
    params, sur = SubtractiveParams(0.7), get_surrogate(surrogate)
    s_m, st_m, g_m = _run(x, params, sur, 0, use_native, monkeypatch, mask=mask)
    monkeypatch.setenv("SNNTC_NATIVE", "1" if use_native else "0")
    c = x.detach().clone().requires_grad_()
    s, st = run_neurons(c, subtractive_step, params, sur)
    g = torch.randn(s.shape, generator=torch.Generator().manual_seed(5), dtype=s.dtype)
    (s * mask * g).sum().backward()
    assert torch.equal(s_m, s.detach() * mask)
    assert torch.equal(st_m.count, s.detach().sum(0).to(torch.int32))
    torch.testing.assert_close(g_m, c.grad, rtol=1e-12, atol=1e-14)


def test_without_the_kernels_torch_ops_run(monkeypatch):
    monkeypatch.setenv("SNNTC_NATIVE", "0")
    assert native.library() is None
    x = _currents(torch.float32, False, T=3)
    spikes, state = run_neurons(x, subtractive_step, SubtractiveParams(0.5), get_surrogate("stdb"), pool=2)
    assert spikes.shape == (3, 3, 8, 3, 3) and state.count.dtype == torch.int32


def test_a_failed_build_names_the_compiler_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SNNTC_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    with pytest.raises(native.NativeBuildError, match="false failed"):
        native.build()
    assert not list(tmp_path.rglob("*.so"))                 # nothing half-written left behind


@needs_compiler
def test_without_torchs_openmp_the_kernels_build_with_pthreads(monkeypatch, tmp_path):
    """If the OpenMP build cannot be had (here: a runtime library that does not exist), the pthread build is used."""
    import ctypes
    from pathlib import Path
    monkeypatch.setenv("SNNTC_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "torch_openmp", lambda: Path(tmp_path) / "libgomp-missing.so.1")
    path = native.build()
    lib = ctypes.CDLL(str(path))
    assert hasattr(lib, "snn_subtractive_forward")
    assert not hasattr(lib, "GOMP_parallel")                 # no OpenMP runtime linked in
    assert len(list(tmp_path.rglob("*.so"))) == 1 and not list(tmp_path.rglob("*.o"))
