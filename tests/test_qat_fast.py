"""The fused quantization-aware CUBA neuron (toolchain.neurons.kernels.cuba._CubaRun, compiled and in torch ops) against autograd
through the unrolled `cuba_step` loop: identical spikes, final state and readout, and the same gradients with
respect to the currents, the weights and the biases (float64), for several decays, with biases, with values that
hit the 24-bit clip and wrap, for the STDB and linear surrogates, on conv (pooled and not) and dense layers; and
a whole loihi-cuba SnnModel's loss gradient, fast path against the unrolled reference."""

import pytest
import torch
import torch.nn.functional as F

import toolchain.neurons.kernels.cuba as kernel
import toolchain.neurons.run as run_mod
import toolchain.snn.deployed as deployed
from toolchain.snn.steps import per_step
from models import build_model
from toolchain.neurons.kernels import native
from toolchain.coding import InputEncoder
from toolchain.quantization.fixed_point import STATE_MAX
from toolchain.neurons import initial_state, run_neurons
from toolchain.neurons.loihi_cuba import CubaParams, cuba_step
from toolchain.coding.direct import direct_input_scale
from toolchain.quantization.quantize import fake_quant_weight
from toolchain.snn import SnnConfig, SnnModel
from toolchain.neurons.surrogates import get_surrogate

DECAYS = [(4096, 0), (1024, 128), (0, 0), (1, 4095)]
SURROGATES = ["stdb", "linear"]
IMPLEMENTATIONS = ["native", "torch"]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request, monkeypatch):
    """Run the fused neuron compiled, or in torch ops (what runs without a C compiler, with SNNTC_NATIVE=0, on
    CUDA)."""
    if request.param == "native":
        if native.library() is None:
            pytest.skip("no compiled kernels here")
    else:
        monkeypatch.setattr(kernel, "_cuba_native_forward", lambda *a: None)
        monkeypatch.setattr(kernel, "_cuba_native_backward", lambda *a: None)
    return request.param


def unrolled(currents, params, spike_fn):
    """The reference: `cuba_step` looped over time, differentiated by autograd."""
    state = initial_state(currents[0])
    out = []
    for t in range(currents.shape[0]):
        s, state = cuba_step(currents[t], state, params, spike_fn)
        out.append(s)
    return torch.stack(out), state


def fused(currents, params, spike_fn):
    assert run_mod.execution_path(cuba_step, spike_fn, currents, params) == run_mod.FUSED
    return run_neurons(currents, cuba_step, params, spike_fn)


def assert_close(a, b, what):
    assert a.shape == b.shape, what
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=what)


def integer_currents(shape, scale, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.randn(shape, generator=g, dtype=dtype) * scale)


def compare(currents, bias, i_decay, v_decay, vth, surrogate, use_v=False):
    """Forward values equal; gradients of a loss on the spikes (or on the final state) equal, w.r.t. currents
    and bias."""
    spike_fn = get_surrogate(surrogate)
    results = []
    for run in (unrolled, fused):
        a = currents.clone().requires_grad_(True)         # (clone keeps the layout)
        b = None if bias is None else bias.clone().requires_grad_(True)
        params = CubaParams(vth, i_decay, v_decay, b)
        spikes, state = run(a, params, spike_fn)
        g = torch.Generator().manual_seed(1)
        w = torch.randn(spikes.shape, generator=g, dtype=spikes.dtype)
        loss = (spikes * w).sum() + (state.v * 1e-3 * w[0]).sum() + (state.u * 1e-4 * w[-1]).sum() if use_v \
            else (spikes * w).sum()
        loss.backward()
        results.append((spikes.detach(), state, a.grad, None if b is None else b.grad))
    (s0, st0, ga0, gb0), (s1, st1, ga1, gb1) = results
    assert torch.equal(s0, s1)
    for name in ("v", "u", "dt"):
        assert torch.equal(getattr(st0, name).detach(), getattr(st1, name).detach()), name
    assert float(s0.sum()) > 0 and float((1 - s0).sum()) > 0, "the test must exercise spikes and silence"
    assert float(ga0.abs().sum()) > 0
    assert_close(ga1, ga0, "currents' gradient")
    if bias is not None:
        assert_close(gb1, gb0, "bias gradient")
    return s0, st0


@pytest.mark.parametrize("i_decay,v_decay", DECAYS)
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_fused_cuba_equals_the_unrolled_loop(implementation, i_decay, v_decay, surrogate):
    T, shape = 7, (3, 4, 5, 5)
    currents = integer_currents((T,) + shape, 40.0, seed=i_decay + v_decay)
    bias = integer_currents((4, 1, 1), 10.0, seed=3)
    compare(currents, bias, i_decay, v_decay, 60.0, surrogate)
    compare(currents, None, i_decay, v_decay, 60.0, surrogate, use_v=True)
    # each step channels-last, as the conv currents of float32 training are laid out
    last = currents.reshape((-1,) + shape[1:]).contiguous(memory_format=torch.channels_last).reshape(currents.shape)
    assert not last.is_contiguous()
    compare(last, bias, i_decay, v_decay, 60.0, surrogate, use_v=True)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_fused_cuba_at_the_24_bit_limits(implementation, surrogate):
    """Currents that push v past the clip (and to it exactly) and u across the wrap, both signs."""
    T, n = 6, 64
    g = torch.Generator().manual_seed(7)
    big = torch.round((torch.rand((T, 2, n), generator=g, dtype=torch.float64) * 2 - 1) * 2.0 ** 18)
    big[:, 0, :8] = (STATE_MAX + 1) // 64 + 1.0          # 64 a beyond 2**23: u wraps, v clips
    big[:, 0, 8:16] = -((STATE_MAX + 1) // 64) - 1.0
    big[0, 1, :4] = STATE_MAX / 64.0                     # v exactly at the bound (no bias there): gradient passes
    bias = integer_currents((n,), 100.0, seed=2)
    bias[:4] = 0
    compare(big, bias, 1024, 128, float(2 ** 17 - 1), surrogate, use_v=True)
    p = CubaParams(float(2 ** 17 - 1), 1024, 128, bias)
    v1, u1 = p.integrate(big[0], initial_state(big[0]))
    assert bool((v1.abs() > STATE_MAX).any()) and bool((v1.abs() == STATE_MAX).any())
    assert bool((u1[0, :8] < 0).all()) and bool((u1[0, 8:16] > 0).all())      # wrapped
    compare(big, bias, 4096, 0, 50000.0, surrogate)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_fused_cuba_on_arbitrary_floats_and_float32(implementation, surrogate):
    """Non-integer currents (the rounding matters) in float64, and the float32 the networks train in."""
    T, shape = 5, (4, 33)
    g = torch.Generator().manual_seed(11)
    cur = torch.randn((T,) + shape, generator=g, dtype=torch.float64) * 70.3
    compare(cur, torch.randn(33, generator=g, dtype=torch.float64) * 9.7, 1000, 300, 55.0, surrogate)
    spike_fn = get_surrogate(surrogate)
    c32 = cur.float().requires_grad_(True)
    s_ref, st_ref = unrolled(c32, CubaParams(55.0, 1000, 300), spike_fn)
    (s_ref.sum() + st_ref.v.sum() * 1e-3).backward()
    g_ref = c32.grad
    c32 = c32.detach().clone().requires_grad_(True)
    s, st = fused(c32, CubaParams(55.0, 1000, 300), spike_fn)
    (s.sum() + st.v.sum() * 1e-3).backward()
    assert torch.equal(s, s_ref.detach()) and torch.equal(st.v, st_ref.v.detach())
    torch.testing.assert_close(c32.grad, g_ref, rtol=1e-6, atol=1e-6)


def test_exact_and_plain_spike_functions_keep_the_loop():
    cur = integer_currents((4, 3), 30.0, seed=0)
    assert run_mod.execution_path(cuba_step, get_surrogate("stdb"), cur, CubaParams(10, exact=True)) == run_mod.LOOP
    assert run_mod.execution_path(cuba_step, lambda x, dt: (x > 0).to(x.dtype), cur, CubaParams(10)) == run_mod.LOOP


# -- a whole network: the loihi-cuba SnnModel, fast path against the unrolled loop --------------------------------
def loihi_model(shape, T, surrogate, i_decay, v_decay, dtype=torch.float64):
    """vgg-small with batch norm (folded into biases by lowering), converted on random inputs x."""
    torch.manual_seed(0)
    net = build_model("vgg-small", shape, 10, batch_norm=True)
    base = SnnModel(net, SnnConfig(neuron="if", coding="direct", timesteps=T, surrogate={"name": surrogate}))
    base = base.to(dtype).eval()
    for name, t in list(base.layers.named_parameters()) + list(base.layers.named_buffers()):
        if "bn" in name and t.is_floating_point():       # batch norms that fold into non-trivial biases
            t.data.copy_(torch.rand_like(t) * 0.5 + (0.75 if name.endswith(("weight", "var")) else -0.25))
    base.calibrator = lambda name, currents: max(float(currents.max()), 1e-6) * 0.5
    g = torch.Generator().manual_seed(3)
    x = torch.rand((6,) + shape, generator=g, dtype=dtype) * 2 - 0.5
    with torch.no_grad():
        base(x, T, InputEncoder("direct"))
    base.calibrator = None
    base.config.neuron, base.config.i_decay, base.config.v_decay = "loihi-cuba", i_decay, v_decay
    base.config.input_scale = direct_input_scale(x.numpy())
    return base.train(), x


def reference_path(m):
    """The QAT path as it was: the generic per-step loop, and each lowered layer's synapse with its folded
    (pool-repeated) fake-quantized weight, NCHW."""
    m.setattr(run_mod, "execution_path", lambda *a, **k: run_mod.LOOP)
    m.setattr(deployed, "quantized_currents",
              lambda layer, scale, h: per_step(
                  lambda z: layer.synapse(z, fake_quant_weight(layer.weight, scale)), h))


def loss_and_grads(model, x, T):
    model.zero_grad(set_to_none=True)
    out = model(x, T, InputEncoder("direct"))
    loss = F.cross_entropy(out.logits, torch.arange(x.shape[0]) % 10)
    loss.backward()
    return out, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("surrogate,i_decay,v_decay", [("linear", 4096, 0), ("stdb", 1024, 128)])
def test_loihi_cuba_model_gradient_equals_the_unrolled_reference(implementation, monkeypatch, surrogate, i_decay,
                                                                  v_decay):
    T = 5
    model, x = loihi_model((1, 8, 8), T, surrogate, i_decay, v_decay)
    out, fast = loss_and_grads(model, x, T)
    with monkeypatch.context() as m:
        reference_path(m)
        ref_out, ref = loss_and_grads(model, x, T)
    assert torch.equal(out.logits, ref_out.logits)
    assert set(out.spike_counts) == set(ref_out.spike_counts)
    for k in ref_out.spike_counts:
        assert torch.equal(out.spike_counts[k], ref_out.spike_counts[k]), k
        assert float(ref_out.spike_counts[k].sum()) > 0, k
    assert set(fast) == set(ref) and any("bn" in k for k in ref)
    for k in ref:
        assert float(ref[k].abs().sum()) > 0, k
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-10, atol=1e-12, msg=k)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 12, 12)])
def test_loihi_cuba_model_float32_forward_is_unchanged(implementation, monkeypatch, shape):
    """In float32 (what training runs): the same logits and spike counts, bit for bit, as the QAT path as it was
    (folded NCHW convolutions, the generic loop); the sum-pooled synapses do run (both layers after a pool)."""
    T = 4
    model, x = loihi_model(shape, T, "linear", 1024, 128, dtype=torch.float32)
    layers = model.lowered()
    assert [l.pool for l in layers] == [1, 2, 2, 1] and all(deployed.sum_pool_applies(l) for l in layers[1:3])
    conv, dense = layers[1], layers[2]          # block_weight: bitwise one entry of each repeated block
    assert torch.equal(conv.block_weight, conv.weight[:, :, ::2, ::2])
    c, hh, ww = dense.input_shape
    assert torch.equal(dense.block_weight.reshape(-1, c, hh // 2, ww // 2),
                       dense.weight.reshape(-1, c, hh, ww)[:, :, ::2, ::2])
    with torch.no_grad():
        out = model(x, T, InputEncoder("direct"))
        with monkeypatch.context() as m:
            reference_path(m)
            ref = model(x, T, InputEncoder("direct"))
    assert torch.equal(out.logits, ref.logits)
    for k in ref.spike_counts:
        assert torch.equal(out.spike_counts[k], ref.spike_counts[k]), k
        assert float(ref.spike_counts[k].sum()) > 0, k
