"""Neuron step functions against hand-computed trajectories, and CUBA against Lava's own LIF."""
import numpy as np
import pytest
import torch

from toolchain.neurons import initial_state, run_neurons
from toolchain.neurons.loihi_cuba import CubaParams, cuba_step, loihi_decay
from toolchain.neurons.subtractive import SubtractiveParams, subtractive_step
from toolchain.neurons.surrogates import get_surrogate

heaviside = lambda x, dt: (x > 0).to(x.dtype)


def run(step, params, inputs):
    cur = torch.tensor(inputs, dtype=torch.float64).reshape(-1, 1)
    spikes, state = run_neurons(cur, step, params, heaviside)
    return spikes.flatten().tolist(), state


def test_integrate_and_fire_resets_by_subtraction():
    # v: 0.6, 1.2 -> spike -> 0.2, 0.8, 0.8, 2.3 -> spike -> 1.3
    spikes, state = run(subtractive_step, SubtractiveParams(1.0, 1.0), [0.6, 0.6, 0.6, 0.0, 1.5])
    assert spikes == [0, 1, 0, 0, 1]
    assert state.v.item() == pytest.approx(1.3)
    assert state.dt.item() == 0


def test_leaky_integrate_and_fire():
    # leak 0.5: v 0.8, 0.4+0.8=1.2 -> spike -> 0.2, 0.1+0.8=0.9
    spikes, state = run(subtractive_step, SubtractiveParams(1.0, 0.5), [0.8, 0.8, 0.8])
    assert spikes == [0, 1, 0]
    assert state.v.item() == pytest.approx(0.9)


def test_steps_since_last_spike_are_counted():
    spikes, state = run(subtractive_step, SubtractiveParams(1.0, 1.0), [2.0, 0.0, 0.0, 0.0])
    assert spikes == [1, 0, 0, 0] and state.dt.item() == 3
    _, silent = run(subtractive_step, SubtractiveParams(1.0, 1.0), [0.0, 0.0])
    assert silent.dt.item() == float("inf")  # never spiked: no last spike, so no STDB gradient


def test_cuba_hand_trajectory():
    # vth 10 -> 640; u keeps 3072/4096, v keeps 3584/4096; input a << 6
    # t1 u=320 v=320; t2 u=240+320=560 v=280+560=840>640 spike v=0; t3 u=420 v=420; t4 u=315 v=367+315=682 spike
    p = CubaParams(vth=10, i_decay=1024, v_decay=512, exact=True)
    spikes, state = run(cuba_step, p, [5, 5, 0, 0])
    assert spikes == [0, 1, 0, 1]
    assert state.u.item() == 315 and state.v.item() == 0


def test_loihi_decay_is_sign_magnitude():
    x = torch.tensor([-192.0, 192.0, -5.0, 5.0], dtype=torch.float64)
    assert loihi_decay(x, 1024).tolist() == [-144, 144, -3, 3]
    assert loihi_decay(x, 4096).tolist() == [0, 0, 0, 0]
    assert loihi_decay(x, 0).tolist() == x.tolist()


def test_cuba_bias_and_clip():
    p = CubaParams(vth=2 ** 17 - 1, i_decay=4096, v_decay=0, bias=torch.tensor(1000.0, dtype=torch.float64), exact=True)
    # t1: v = 100000*64 + 1000*64 = 6464000; t2: 12928000 clips to 2**23 - 1 = 8388607 > (2**17 - 1) * 64 -> spike
    spikes, state = run(cuba_step, p, [100000] * 3)
    assert spikes == [0, 1, 0]
    assert state.v.item() == 6464000


@pytest.mark.lava
def test_cuba_matches_lava_lif_step_for_step():
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor

    rng = np.random.default_rng(3)
    T, n_in, n = 12, 6, 4
    spikes_in = (rng.random((n_in, T)) < 0.5).astype(np.int8)
    # mixed-sign weights on Loihi are an 8-bit signed mantissa times 2: Lava truncates odd ones, so use even ones
    weights = 2 * rng.integers(-60, 60, size=(n, n_in))
    src = RingBuffer(data=spikes_in)
    dense = Dense(weights=weights)
    lif = LIF(shape=(n,), vth=90, du=1023, dv=300, bias_mant=np.array([3, -2, 0, 7]), bias_exp=6)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    mon_v, mon_s = Monitor(), Monitor()
    mon_v.probe(lif.v, T)
    mon_s.probe(lif.s_out, T)
    lif.run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    lava_v = mon_v.get_data()[lif.name]["v"]          # (T, n)
    lava_s = mon_s.get_data()[lif.name]["s_out"]
    lif.stop()
    # ours: the dense layer delays by one step; du = 1023 in Lava is i_decay 1024 (Lava adds 1)
    a = np.zeros((T, n))
    a[1:] = (weights @ spikes_in[:, :-1]).T
    p = CubaParams(vth=90, i_decay=1024, v_decay=300, bias=torch.tensor([3.0, -2, 0, 7], dtype=torch.float64), exact=True)
    state, ours_v, ours_s = initial_state(torch.zeros(n, dtype=torch.float64)), [], []
    for t in range(T):
        s, state = cuba_step(torch.tensor(a[t], dtype=torch.float64), state, p, heaviside)
        ours_v.append(state.v.numpy().copy())
        ours_s.append(s.numpy().copy())
    assert lava_s.sum() > 3, "test must exercise spikes"
    np.testing.assert_array_equal(np.array(ours_s), lava_s)
    np.testing.assert_array_equal(np.array(ours_v), lava_v)


def test_surrogate_gradients_match_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    dt = torch.randint(0, 30, (50,)).double()
    for name in ["stdb", "linear", "fast-sigmoid", "arctan", "rectangular"]:
        sur = get_surrogate(name, alpha=0.3, beta=0.01, width=1.0 if name != "fast-sigmoid" else 10.0)
        x.grad = None
        out = sur(x, dt)
        assert torch.equal(out, (x > 0).double())
        out.sum().backward()
        if name == "stdb":
            expected = 0.3 * torch.exp(-0.01 * dt)
        elif name == "linear":
            expected = 0.3 * torch.clamp(1 - x.detach().abs(), min=0)
        else:
            expected = sur.grad(x.detach(), dt)
        torch.testing.assert_close(x.grad, expected)


def test_stdb_gradient_by_finite_formula_values():
    sur = get_surrogate("stdb")
    x = torch.zeros(3, requires_grad=True)
    sur(x, torch.tensor([0.0, 10.0, 100.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.3, 0.3 * np.exp(-0.1), 0.3 * np.exp(-1.0)], dtype=torch.float32))


def test_unknown_surrogate_lists_valid_ones():
    from toolchain.errors import ConfigError
    with pytest.raises(ConfigError, match="valid: stdb, linear"):
        get_surrogate("sigmoidish")
