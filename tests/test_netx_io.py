"""netx HDF5 writer/reader: the stock Lava-DL loader accepts what we write, read_netx round-trips
it, writes are atomic, and broken files give one-line NetxErrors."""
import json
import os

import h5py
import numpy as np
import pytest

from toolchain.errors import ExportError, NetxError
from toolchain.quantization.fixed_point import FxLayer, FxNetwork
from toolchain.io.netx import read_netx, write_netx


def conv_out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def make_conv_net(seed=0):
    rng = np.random.default_rng(seed)
    c, h, w = 2, 9, 8
    w1 = rng.integers(-128, 128, (4, 1, 3, 3)) * 2
    h1, w1o = conv_out(h, 3, 2, 1, 1), conv_out(w, 3, 2, 1, 1)
    l1 = FxLayer("conv1", "conv", w1, (c, h, w), (4, h1, w1o), vth=150, i_decay=1024, v_decay=512,
                 bias=rng.integers(-10, 30, 4), stride=(2, 2), padding=(1, 1), groups=2,
                 scale=12.5, source="features.0+features.1")
    w2 = rng.integers(-128, 128, (6, 2, 3, 2)) * 2
    h2, w2o = conv_out(h1, 3, 1, 2, 2), conv_out(w1o, 2, 1, 1, 1)
    l2 = FxLayer("conv2", "conv", w2, (4, h1, w1o), (6, h2, w2o), vth=200, stride=(1, 1),
                 padding=(2, 1), dilation=(2, 1), groups=2, scale=3.0, source="features.3")
    l3 = FxLayer("fc", "dense", rng.integers(-128, 128, (5, 6 * h2 * w2o)) * 2, (6, h2, w2o), (5,),
                 vth=300, bias=rng.integers(-50, 50, 5), flatten_before=True, is_output=True,
                 scale=0.5, source="classifier")
    return FxNetwork((c, h, w), [l1, l2, l3], num_classes=5, timesteps=6, input_coding="direct",
                     input_bits=8, input_scale=100.0, readout="voltage", mean=(0.5, 0.25),
                     std=(0.2, 0.3), metadata={"dataset": "toy", "accuracy": 0.5})


def make_dense_net(seed=1):
    rng = np.random.default_rng(seed)
    l1 = FxLayer("fc1", "dense", rng.integers(-128, 128, (7, 12)) * 2, (12,), (7,), vth=100,
                 i_decay=4096, v_decay=0)
    l2 = FxLayer("fc2", "dense", rng.integers(-128, 128, (3, 7)) * 2, (7,), (3,), vth=50,
                 i_decay=2048, v_decay=100, bias=rng.integers(-100, 100, 3), is_output=True)
    return FxNetwork((12,), [l1, l2], num_classes=3, timesteps=4)


def assert_nets_equal(a: FxNetwork, b: FxNetwork):
    for f in ("input_shape", "num_classes", "timesteps", "input_coding", "input_bits",
              "input_scale", "readout", "mean", "std", "metadata"):
        assert getattr(a, f) == getattr(b, f), f
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers):
        for f in ("name", "kind", "input_shape", "output_shape", "vth", "i_decay", "v_decay",
                  "stride", "padding", "dilation", "groups", "flatten_before", "is_output",
                  "scale", "source"):
            assert tuple(np.atleast_1d(getattr(la, f))) == tuple(np.atleast_1d(getattr(lb, f))), \
                (la.name, f)
        np.testing.assert_array_equal(la.weight, lb.weight)
        assert (la.bias is None) == (lb.bias is None)
        if la.bias is not None:
            np.testing.assert_array_equal(la.bias, lb.bias)


def test_file_layout_mirrors_slayer(tmp_path):
    net = make_conv_net()
    path = write_netx(net, tmp_path / "net.net", extra_metadata={"run": "abc", "n": 3})
    with h5py.File(path, "r") as f:
        layers = f["layer"]
        assert sorted(layers.keys(), key=int) == ["0", "1", "2", "3", "4"]
        types = [layers[str(i)]["type"][0] for i in range(5)]
        assert types == [b"input", b"conv", b"conv", b"flatten", b"dense"]
        assert layers["0"]["type"].dtype == np.dtype("S10") and layers["0"]["type"].shape == (1,)
        assert set(layers["0"].keys()) == {"type", "shape"}
        assert list(layers["0"]["shape"][()]) == [2, 9, 8]
        c1 = layers["1"]
        assert list(c1["shape"][()]) == list(net.layers[0].output_shape)
        assert list(c1["stride"][()]) == [2, 2] and list(c1["padding"][()]) == [1, 1]
        assert int(c1["groups"][()]) == 2
        np.testing.assert_array_equal(c1["weight"][()], net.layers[0].weight)
        np.testing.assert_array_equal(c1["bias"][()], net.layers[0].bias)
        c2 = layers["2"]
        assert list(c2["padding"][()]) == [2, 1] and list(c2["dilation"][()]) == [2, 1]
        neuron = c1["neuron"]
        assert neuron["type"][()] == b"CUBA"
        assert int(neuron["iDecay"][()]) == 1024 and int(neuron["vDecay"][()]) == 512
        assert int(neuron["vThMant"][()]) == 150 and int(neuron["refDelay"][()]) == 1
        assert not bool(neuron["gradedSpike"][()])
        d = layers["4"]
        assert list(d["shape"][()]) == [5]
        np.testing.assert_array_equal(d["weight"][()], net.layers[2].weight)
        a = f.attrs
        assert a["input_coding"] == "direct" and int(a["input_bits"]) == 8
        assert int(a["timesteps"]) == 6 and a["readout"] == "voltage"
        assert json.loads(a["extra_metadata"]) == {"run": "abc", "n": 3}
        assert [l["name"] for l in json.loads(a["layers"])] == ["conv1", "conv2", "fc"]
        import toolchain
        assert a["snntc_version"] == toolchain.__version__


@pytest.mark.lava
def test_stock_netx_loader_builds_what_we_write(tmp_path):
    from lava.lib.dl.netx.hdf5 import Network
    for net in (make_conv_net(), make_dense_net()):
        path = write_netx(net, tmp_path / "net.net")
        lnet = Network(net_config=str(path))
        assert len(lnet.layers) == len(net.layers)
        for block, layer in zip(lnet.layers, net.layers):
            # netx shapes are (x, y, f) = reversed (C, H, W)
            assert tuple(block.out.shape) == tuple(layer.output_shape[::-1])
            syn = block.synapse
            if layer.kind == "dense":
                w = syn.weights.init
                exp = syn.proc_params["weight_exp"]
                np.testing.assert_array_equal(w * 2.0 ** exp, layer.weight)
            else:
                w = syn.weight.init   # (out, x, y, in), kernel flipped (Lava convolves)
                np.testing.assert_array_equal(w[:, ::-1, ::-1, :].transpose(0, 3, 2, 1),
                                              layer.weight)
                assert list(syn.stride.init) == list(layer.stride[::-1])
                assert list(syn.padding.init) == list(layer.padding[::-1])
                assert list(syn.dilation.init) == list(layer.dilation[::-1])
            neuron = block.neuron
            assert int(np.asarray(neuron.vth.init)) == layer.vth
            assert int(np.asarray(neuron.du.init)) == layer.i_decay - 1
            assert int(np.asarray(neuron.dv.init)) == layer.v_decay
            if layer.bias is not None:
                b = np.asarray(neuron.bias_mant.init)
                if layer.kind == "conv":
                    np.testing.assert_array_equal(b[0, 0, :], layer.bias)
                else:
                    np.testing.assert_array_equal(b, layer.bias)
        assert tuple(lnet.inp.shape) == (tuple(net.input_shape[::-1]) if
                                         net.layers[0].kind == "conv" else
                                         (int(np.prod(net.input_shape)),))


def test_round_trip(tmp_path):
    for net in (make_conv_net(), make_dense_net()):
        path = write_netx(net, tmp_path / "rt.net")
        back = read_netx(path)
        assert_nets_equal(net, back)
        # and again: writing what we read gives the same network
        assert_nets_equal(net, read_netx(write_netx(back, tmp_path / "rt2.net")))


def test_round_trip_merges_extra_metadata(tmp_path):
    net = make_dense_net()
    back = read_netx(write_netx(net, tmp_path / "m.net", extra_metadata={"k": [1, 2]}))
    assert back.metadata == {"k": [1, 2]}
    assert read_netx(tmp_path / "m.net", timesteps=9).timesteps == 9


def _no_temp_files(directory):
    return [p for p in os.listdir(directory) if p.endswith(".tmp")] == []


def test_atomic_write_failure_leaves_no_file(tmp_path):
    net = make_dense_net()
    target = tmp_path / "new.net"
    with pytest.raises(ExportError):
        write_netx(net, target, extra_metadata={"bad": object()})   # fails after the layers
    assert not target.exists()
    assert _no_temp_files(tmp_path)


def test_atomic_write_failure_keeps_existing_file(tmp_path):
    target = tmp_path / "net.net"
    write_netx(make_conv_net(), target)
    before = target.read_bytes()
    broken = make_dense_net()
    broken.layers[1].weight = broken.layers[1].weight[:, :5]          # wrong shape
    with pytest.raises(ExportError, match="fc2"):
        write_netx(broken, target)
    with pytest.raises(ExportError):
        write_netx(make_dense_net(), target, extra_metadata={"bad": object()})
    assert target.read_bytes() == before
    assert _no_temp_files(tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        write_netx(make_dense_net(), tmp_path / "missing_dir" / "x.net")


def one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(NetxError) as e:
        read_netx(tmp_path / "nope.net")
    assert "not found" in one_line(e)
    p = tmp_path / "text.net"
    p.write_text("this is not hdf5\n" * 100)
    with pytest.raises(NetxError) as e:
        read_netx(p)
    assert "not an HDF5" in one_line(e)


def test_truncated_file(tmp_path):
    path = write_netx(make_conv_net(), tmp_path / "t.net")
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 600):
        bad = tmp_path / f"cut{cut}.net"
        bad.write_bytes(data[:cut])
        with pytest.raises(NetxError) as e:
            read_netx(bad)
        one_line(e)


def test_no_layer_group(tmp_path):
    p = tmp_path / "empty.h5"
    with h5py.File(p, "w") as f:
        f.create_group("something")
    with pytest.raises(NetxError) as e:
        read_netx(p)
    assert "'layer'" in one_line(e)


def _add_layer(path, index, type_name, **datasets):
    with h5py.File(path, "a") as f:
        g = f["layer"].create_group(str(index))
        g.create_dataset("type", (1,), "S10", [type_name.encode()])
        for k, v in datasets.items():
            g.create_dataset(k, data=v)


@pytest.mark.parametrize("ltype", ["pool", "average", "concat", "convT", "unpool"])
def test_unsupported_layer_type(tmp_path, ltype):
    path = write_netx(make_conv_net(), tmp_path / "p.net")
    with h5py.File(path, "a") as f:
        del f["layer/4"]
    _add_layer(path, 4, ltype, shape=np.array([6, 2, 2]))
    with pytest.raises(NetxError) as e:
        read_netx(path)
    msg = one_line(e)
    assert ltype in msg and "layer 4" in msg and "netx cannot run" in msg


@pytest.mark.lava
def test_stock_loader_also_rejects_pool(tmp_path):
    from lava.lib.dl.netx.hdf5 import Network
    path = write_netx(make_conv_net(), tmp_path / "p.net")
    _add_layer(path, 5, "pool", shape=np.array([6, 2, 2]))
    with pytest.raises(NotImplementedError):
        Network(net_config=str(path))


@pytest.mark.parametrize("neuron_type,drop,text", [
    ("ALIF", None, "neuron type 'ALIF' is not supported"),
    ("SDNN", "vThMant", "SDNN neuron has no 'vThMant'"),
])
def test_wrong_neuron_type(tmp_path, neuron_type, drop, text):
    path = write_netx(make_dense_net(), tmp_path / "n.net")
    with h5py.File(path, "a") as f:
        del f["layer/2/neuron/type"]
        f["layer/2"].create_dataset("neuron/type", data=neuron_type)
        if drop:
            del f[f"layer/2/neuron/{drop}"]
    with pytest.raises(NetxError) as e:
        read_netx(path)
    msg = one_line(e)
    assert text in msg and "layer 2" in msg


def test_dense_weight_count_mismatch(tmp_path):
    path = write_netx(make_dense_net(), tmp_path / "w.net")
    with h5py.File(path, "a") as f:
        del f["layer/2/weight"]
        f["layer/2"].create_dataset("weight", data=np.ones((3, 6), np.float32))
    with pytest.raises(NetxError) as e:
        read_netx(path)
    assert "layer 2" in one_line(e)
    with h5py.File(path, "a") as f:
        del f["layer/2/weight"]
        f["layer/2"].create_dataset("weight", data=np.ones(20, np.float32))   # not 3 x k
    with pytest.raises(NetxError):
        read_netx(path)


def test_input_layer_with_an_incomplete_neuron_names_what_is_missing(tmp_path):
    """An input layer with a neuron is a layer of its own (tests/test_netx_kinds.py runs it against Lava); one
    whose neuron lacks a parameter is refused, naming it."""
    path = write_netx(make_dense_net(), tmp_path / "i.net")
    with h5py.File(path, "a") as f:
        f["layer/0"].create_dataset("neuron/type", data="CUBA")
    with pytest.raises(NetxError) as e:
        read_netx(path)
    assert "layer 0 (input): CUBA neuron has no 'iDecay'" in one_line(e)


def test_foreign_file_defaults(tmp_path):
    """A netx file without our attributes (e.g. written by another tool)."""
    net = make_conv_net()
    path = write_netx(net, tmp_path / "f.net")
    with h5py.File(path, "a") as f:
        for k in list(f.attrs.keys()):
            del f.attrs[k]
    back = read_netx(path, timesteps=7)
    assert back.input_coding == "poisson" and back.input_bits == 0 and back.readout == "spikes"
    assert back.timesteps == 7 and back.num_classes == 5
    assert [l.name for l in back.layers] == ["layer1", "layer2", "layer4"]
    assert back.layers[-1].is_output and back.layers[2].flatten_before
    np.testing.assert_array_equal(back.layers[1].weight, net.layers[1].weight)
