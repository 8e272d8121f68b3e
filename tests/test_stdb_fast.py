"""What SnnModel trains with (runs of spiking layers a block of time steps at a time, toolchain.neurons.kernels.stack, on
the fused subtractive neuron, toolchain.neurons.kernels.subtractive._SubtractiveRun) against plain autograd through the unrolled time
loop: identical spikes, states and logits, and the same gradients for every weight (float64), for IF and LIF
neurons, STDB and other surrogates, VGG and ResNet networks, in one block of steps and in blocks of one step."""
import math

import pytest
import torch
import torch.nn.functional as F

import toolchain.neurons.kernels.layout as layout
import toolchain.neurons.kernels.subtractive as sub_kernel
import toolchain.snn.model as snn_mod
import toolchain.neurons.kernels.stack as spiking_stack
from toolchain.neurons.kernels import native
from models import build_model
from toolchain.coding import InputEncoder
from toolchain.ir import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Residual, Spike
from toolchain.neurons import NeuronState, run_neurons
from toolchain.neurons.run import LOOP
from toolchain.neurons.subtractive import SubtractiveParams, subtractive_step
from toolchain.snn import SnnConfig, SnnModel
from toolchain.neurons.surrogates import get_surrogate

SURROGATE_ARGS = {"fast-sigmoid": {"width": 10.0}}


# -- the reference: the neuron loop unrolled over time, differentiated by autograd --------------------------------
def naive_neurons(currents, threshold, leak, spike_fn):
    """v <- leak v + I; s = spike_fn(v / theta - 1, dt); v <- v - theta s (no gradient through the reset)."""
    v = torch.zeros_like(currents[0])
    dt = torch.full_like(currents[0], float("inf"))     # no spike yet: STDB passes no gradient
    out = []
    for t in range(currents.shape[0]):
        v = leak * v + currents[t]
        s = spike_fn(v / threshold - 1.0, dt)
        v = v - threshold * s.detach()
        dt = torch.where(s.detach() > 0, torch.zeros_like(dt), dt + 1)
        out.append(s)
    return torch.stack(out), v, dt


def per_step(fn, h):
    T, B = h.shape[:2]
    y = fn(h.reshape((T * B,) + h.shape[2:]))
    return y.reshape((T, B) + y.shape[1:])


def naive_snn(model: SnnModel, seq, masks):
    """The SNN of `model` run layer by layer with the naive neuron loop (NCHW, unfused pooling)."""
    cfg, mods, counts = model.config, model.layers, {}
    spike_fn = cfg.spike_fn()

    def run(layers, h):
        for layer in layers:
            if isinstance(layer, (Conv2d, Linear, BatchNorm2d)):
                h = per_step(mods[layer.name], h)
            elif isinstance(layer, Spike):
                h, _, _ = naive_neurons(h, cfg.thresholds[layer.name], cfg.leak, spike_fn)
                counts[layer.name] = h.detach().flatten(2).sum((0, 2))
            elif isinstance(layer, AvgPool2d):
                h = per_step(lambda z: F.avg_pool2d(z, layer.kernel_size), h)
            elif isinstance(layer, Flatten):
                h = h.flatten(2)
            elif isinstance(layer, Dropout):
                h = h * masks[layer.name] if layer.name in masks else h
            elif isinstance(layer, Residual):
                body = run(layer.body, h)
                h = body + (run(layer.shortcut, h) if layer.shortcut else h)
        return h

    out = run(model.net.layers, seq)
    return out.sum(0) / seq.shape[0], counts


def recording_masks(model, monkeypatch):
    """Record the dropout masks the model draws, so the reference uses the same ones."""
    masks = {}
    orig = SnnModel._mask

    def mask(self, layer, h):
        m = orig(self, layer, h)
        masks[layer.name] = m.detach().clone()
        return m
    monkeypatch.setattr(SnnModel, "_mask", mask)
    return masks


def weight_grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def check_model(name, leak, surrogate, monkeypatch, dtype=torch.float64, T=6, batch=6, blocks=False):
    if blocks:                          # every run of spiking layers goes one time step at a time
        monkeypatch.setattr(spiking_stack, "CONV_BLOCK_VALUES", 1)
        monkeypatch.setattr(spiking_stack, "LINEAR_BLOCK_VALUES", 1)
    torch.manual_seed(0)
    net = build_model(name, (1, 8, 8), 10)
    cfg = SnnConfig(thresholds={s.name: 0.5 for s in net.spiking_layers}, neuron="if" if leak == 1.0 else "lif",
                    leak=leak, coding="poisson", timesteps=T,
                    surrogate={"name": surrogate, **SURROGATE_ARGS.get(surrogate, {})})
    model = SnnModel(net, cfg).to(dtype).train()
    x = torch.rand(batch, 1, 8, 8, dtype=dtype) * 1.5 - 0.25
    y = torch.arange(batch) % 10
    masks = recording_masks(model, monkeypatch)

    out = model(x, T, InputEncoder("poisson", seed=5))
    F.cross_entropy(out.logits, y).backward()
    fast = weight_grads(model)

    model.zero_grad(set_to_none=True)
    enc = InputEncoder("poisson", seed=5)
    seq = torch.stack([enc(x, t) for t in range(T)])
    logits, counts = naive_snn(model, seq, masks)
    F.cross_entropy(logits, y).backward()
    ref = weight_grads(model)

    assert torch.equal(out.logits, logits)
    assert set(out.spike_counts) == set(counts)
    for k in counts:
        assert torch.equal(out.spike_counts[k], counts[k]), k
    assert all(float(c.sum()) > 0 for c in counts.values()), "every layer must spike for the test to mean something"
    weights = {k for k, _ in model.named_parameters() if k.endswith("weight")}
    assert set(fast) == set(ref) and weights <= set(ref)
    for k in ref:
        assert ref[k].abs().max() > 0, k
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-10, atol=1e-13 * float(ref[k].abs().max()), msg=k)


@pytest.mark.parametrize("blocks", [False, True])
@pytest.mark.parametrize("leak", [1.0, 0.9])
@pytest.mark.parametrize("surrogate", ["stdb", "linear", "arctan"])
def test_vgg_small_gradients_equal_unrolled_autograd(leak, surrogate, blocks, monkeypatch):
    check_model("vgg-small", leak, surrogate, monkeypatch, blocks=blocks)


@pytest.mark.parametrize("blocks", [False, True])
@pytest.mark.parametrize("leak,surrogate", [(1.0, "stdb"), (0.9, "stdb"), (1.0, "linear")])
def test_resnet_small_gradients_equal_unrolled_autograd(leak, surrogate, blocks, monkeypatch):
    check_model("resnet-small", leak, surrogate, monkeypatch, T=4, batch=4, blocks=blocks)


def test_the_block_path_is_what_runs(monkeypatch):
    """SnnModel hands its conv runs and linear layers to toolchain.neurons.kernels.stack (so the tests above test it)."""
    if native.library() is None:
        pytest.skip("no compiled kernels: SnnModel runs layer by layer")
    runs = []
    orig = spiking_stack.run_stages
    monkeypatch.setattr(spiking_stack, "run_stages", lambda x, st, sur: runs.append([s.name for s in st]) or orig(x, st, sur))
    check_model("vgg-small", 1.0, "stdb", monkeypatch)
    assert runs == [["spike0", "spike2"], ["fc_spike0"]]


def test_float32_channels_last_path_matches_the_loop(monkeypatch):
    """float32 on the CPU runs the convs channels-last: the block path (fused neurons and pooling) against the
    unrolled loop inside the same model, layer by layer (the forward is bit for bit the same: oneDNN computes each
    sample alike whatever the batch)."""
    torch.manual_seed(1)
    net = build_model("vgg-small", (1, 8, 8), 10)
    model = SnnModel(net, SnnConfig(thresholds={s.name: 0.5 for s in net.spiking_layers}, timesteps=8)).train()
    x, y = torch.rand(5, 1, 8, 8), torch.arange(5)
    results = []
    for impl in ["fast", "naive"]:
        if impl == "naive":
            monkeypatch.setattr(snn_mod, "execution_path", lambda *a, **k: LOOP)   # layer by layer
            def loop(currents, step, params, spike_fn, state=None, pool=0, mask=None):
                s, v, dt = naive_neurons(currents, params.threshold, params.leak, spike_fn)
                state = NeuronState(v, v, dt, s.detach().sum(0).to(torch.int32) if mask is not None else None)
                s = s * mask if mask is not None else s
                return (per_step(lambda z: F.avg_pool2d(z, pool), s) if pool else s), state
            monkeypatch.setattr(snn_mod, "run_neurons", loop)
        torch.manual_seed(2)
        model.zero_grad(set_to_none=True)
        out = model(x, 8, InputEncoder("poisson", seed=3))
        F.cross_entropy(out.logits, y).backward()
        results.append((out, weight_grads(model)))
    (fast, gf), (ref, gr) = results
    assert torch.equal(fast.logits, ref.logits)
    assert any(isinstance(l, Dropout) for l in net.layers)        # the fused dropout is part of what is compared
    assert fast.spike_counts.keys() == ref.spike_counts.keys()
    assert all(torch.equal(fast.spike_counts[k], ref.spike_counts[k]) for k in ref.spike_counts)
    for k in gr:
        torch.testing.assert_close(gf[k], gr[k], rtol=1e-5, atol=1e-6 * float(gr[k].abs().max()), msg=k)


def test_inference_equals_the_loop():
    torch.manual_seed(3)
    net = build_model("vgg-small", (1, 8, 8), 10)
    model = SnnModel(net, SnnConfig(thresholds={s.name: 0.5 for s in net.spiking_layers}, timesteps=5)).double().eval()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        out = model(x, 5, InputEncoder("poisson", seed=1))
        enc = InputEncoder("poisson", seed=1)
        logits, counts = naive_snn(model, torch.stack([enc(x, t) for t in range(5)]), {})
    assert torch.equal(out.logits, logits)
    assert all(torch.equal(out.spike_counts[k], counts[k]) for k in counts)


# -- run_neurons itself -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("block,pool,names", [
    (50, 0, ["stdb", "linear", "fast-sigmoid", "arctan", "rectangular"]),
    (1, 0, ["stdb", "linear"]), (1 << 22, 0, ["stdb", "linear"]),       # values per block of steps: 1 step, all
    (1, 2, ["stdb"]), (1 << 22, 2, ["stdb", "linear"])])
def test_run_neurons_against_the_loop(block, pool, names, monkeypatch):
    monkeypatch.setattr(sub_kernel, "BLOCK", block)
    torch.manual_seed(4)
    for name in names:
        sur = get_surrogate(name, **SURROGATE_ARGS.get(name, {}))
        for leak, theta in [(1.0, 1.0), (0.9, 0.7), (0.5, 1 / 3)]:
            for channels_last in [False, True]:
                cur = torch.randn(9 * 3, 4, 6, 6, dtype=torch.float64) * 0.6 + 0.25
                if channels_last:
                    cur = cur.contiguous(memory_format=torch.channels_last)
                cur = cur.reshape(9, 3, 4, 6, 6).requires_grad_()
                s_ref, v_ref, dt_ref = naive_neurons(cur, theta, leak, sur)
                if pool:
                    s_ref = per_step(lambda z: F.avg_pool2d(z, pool), s_ref)
                s, state = run_neurons(cur, subtractive_step, SubtractiveParams(theta, leak), sur, pool=pool)
                assert torch.equal(s, s_ref) and torch.equal(state.v, v_ref) and torch.equal(state.dt, dt_ref)
                gs, gv = torch.randn_like(s), torch.randn_like(state.v)
                for with_v in [True, False]:
                    loss_ref = (s_ref * gs).sum() + ((v_ref * gv).sum() if with_v else 0)
                    loss = (s * gs).sum() + ((state.v * gv).sum() if with_v else 0)
                    g_ref, = torch.autograd.grad(loss_ref, cur, retain_graph=True)
                    g, = torch.autograd.grad(loss, cur, retain_graph=True)
                    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14,
                                               msg=f"{name} leak {leak} theta {theta}")


def test_per_channel_threshold_tensor():
    torch.manual_seed(5)
    theta = torch.tensor([0.4, 0.9, 1.3], dtype=torch.float64).reshape(3, 1)
    cur = (torch.randn(7, 2, 3, 5, dtype=torch.float64) + 0.3).requires_grad_()
    sur = get_surrogate("stdb")
    s_ref, v_ref, _ = naive_neurons(cur, theta, 1.0, sur)
    s, state = run_neurons(cur, subtractive_step, SubtractiveParams(theta, 1.0), sur)
    assert torch.equal(s, s_ref) and torch.equal(state.v, v_ref)
    g_ref, = torch.autograd.grad(s_ref.sum(), cur)
    g, = torch.autograd.grad(s.sum(), cur)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)


def test_long_runs_count_past_255_steps():
    """T >= 255: the steps-since-spike bookkeeping switches from uint8 to int16."""
    torch.manual_seed(6)
    cur = (torch.rand(300, 2, 5, dtype=torch.float64) * 0.002).requires_grad_()
    cur.data[0, 0, 0] = 2.0                                 # one early spike, then a long silence
    sur = get_surrogate("stdb")
    s_ref, v_ref, dt_ref = naive_neurons(cur, 1.0, 1.0, sur)
    s, state = run_neurons(cur, subtractive_step, SubtractiveParams(1.0, 1.0), sur)
    assert torch.equal(s, s_ref) and torch.equal(state.dt, dt_ref) and float(dt_ref.max()) >= 255
    g_ref, = torch.autograd.grad(s_ref.sum() + v_ref.sum(), cur)
    g, = torch.autograd.grad(s.sum() + state.v.sum(), cur)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spike_boundary_is_exactly_the_spike_test(dtype):
    """v > c decides exactly as v / theta - 1 > 0 does, for values right at the threshold."""
    for theta in [1.0, 0.7, 1 / 3, 0.1, 3.7, 1e-3]:
        c = layout.spike_boundary(theta, dtype, "cpu")
        assert c is not None
        v = torch.tensor([theta, c], dtype=dtype)
        for direction in [math.inf, -math.inf]:
            w = v.clone()
            for _ in range(4):
                w = torch.nextafter(w, torch.full_like(w, direction))
                assert torch.equal(w > c, w / theta - 1.0 > 0), theta
        assert torch.equal(v > c, v / theta - 1.0 > 0)


def test_other_step_functions_use_the_generic_loop():
    """cuba_step (Loihi) and plain callables are not fused: run_neurons loops them as before."""
    from toolchain.neurons.loihi_cuba import CubaParams, cuba_step
    cur = torch.tensor([5.0, 5.0, 0.0, 0.0], dtype=torch.float64).reshape(-1, 1)
    spikes, state = run_neurons(cur, cuba_step, CubaParams(vth=10, i_decay=1024, v_decay=512, exact=True),
                                lambda x, dt: (x > 0).to(x.dtype))
    assert spikes.flatten().tolist() == [0, 1, 0, 1] and state.u.item() == 315
