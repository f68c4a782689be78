"""Image classification datasets: embedded digits, CIFAR-100 (python pickle format), ImageNet (ImageFolder)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from .common import Augment, ClassificationData, DatasetNotFoundError, TensorClassificationData

__all__ = ["load_digits", "load_cifar100", "load_imagenet", "FolderClassificationData", "read_cifar_pickle",
           "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------- digits
def load_digits(image_size: int = 16, *, test_fraction: float = 0.2, split_seed: int = 0,
                augment: Augment | None = None) -> TensorClassificationData:
    """scikit-learn's digits (1,797 8x8 grayscale images, 10 classes; shipped inside the sklearn
    package, so nothing is downloaded), bilinearly upsampled to ``image_size``.

    Fixed stratified split (``test_fraction`` 0.2, ``split_seed`` 0): 1,437 train / 360 test.
    Augmentation: random crop with 1-pixel reflect padding (no flips: digits are not mirror-symmetric).
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # [1797, 1, 8, 8] in [0, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=split_seed, stratify=d.target)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    aug = augment if augment is not None else Augment(crop_padding=1)
    return TensorClassificationData("digits", x[tr], y[tr], x[te], y[te], num_classes=10, augment=aug,
                                    class_names=[str(i) for i in range(10)])


# --------------------------------------------------------------------------------------- CIFAR-100
class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR python format that refuses every global except what numpy arrays need."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def read_cifar_pickle(path: str | Path) -> dict:
    """Read one file of the CIFAR "python version" (a pickled dict with bytes keys), safely."""
    with open(path, "rb") as f:
        return _CifarUnpickler(io.BytesIO(f.read()), encoding="bytes").load()


def _get(d: dict, key: str):
    return d[key.encode()] if key.encode() in d else d[key]


def _cifar_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    d = read_cifar_pickle(path)
    try:
        data = np.asarray(_get(d, "data"), dtype=np.uint8)
        labels = np.asarray(_get(d, "fine_labels"), dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"{path}: not a CIFAR-100 file (missing key {e})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: expected data [N, 3072] uint8 and N fine_labels, "
                         f"got {data.shape} and {len(labels)}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def load_cifar100(root: str | Path, *, resize: int | None = None,
                  augment: Augment | None = None) -> TensorClassificationData:
    """CIFAR-100 from its python-pickle directory: ``root/cifar-100-python/{train,test,meta}`` (or
    ``root`` itself being ``cifar-100-python``). Images stay uint8 in memory.

    Augmentation (the original's): 2-pixel reflect-pad random crop, horizontal flip, 3x3 cutout.
    ``resize=224`` reproduces the original's per-batch bilinear upsampling.
    """
    root = Path(root).expanduser()
    d = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    expected = ("the CIFAR-100 python version: a directory 'cifar-100-python' with the pickle files "
                "'train' and 'test' (and 'meta'), as extracted from cifar-100-python.tar.gz")
    if not (d / "train").is_file() or not (d / "test").is_file():
        raise DatasetNotFoundError("CIFAR-100", root, expected)
    train_x, train_y = _cifar_split(d / "train")
    test_x, test_y = _cifar_split(d / "test")
    names = None
    if (d / "meta").is_file():
        meta = read_cifar_pickle(d / "meta")
        raw = meta.get(b"fine_label_names", meta.get("fine_label_names"))
        if raw is not None:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    num_classes = max(100, int(max(train_y.max(), test_y.max())) + 1)
    aug = augment if augment is not None else Augment(crop_padding=2, flip=True, cutout=3)
    return TensorClassificationData("cifar100", train_x, train_y, test_x, test_y, num_classes=num_classes,
                                    augment=aug, resize=resize, class_names=names)


# ----------------------------------------------------------------------------------------- ImageNet
class FolderClassificationData(ClassificationData):
    """An ImageFolder tree ``root/{train,val}/<class>/<image>`` streamed through a DataLoader.

    Train: RandomResizedCrop(image_size) + horizontal flip; test: resize to image_size/0.875, center
    crop. Normalized with the ImageNet mean/std.
    """

    def __init__(self, root: str | Path, *, name: str = "imagenet", image_size: int = 224, num_workers: int = 4):
        from torchvision import datasets, transforms as T

        root = Path(root).expanduser()
        expected = ("an ImageFolder tree: 'train/<class>/<image>' and 'val/<class>/<image>' "
                    "(JPEG/PNG; the ImageNet validation images must be sorted into class folders)")
        for split in ("train", "val"):
            sub = root / split
            if not sub.is_dir() or not any(p.is_dir() for p in sub.iterdir()):
                raise DatasetNotFoundError(name, root, expected)
        norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        test_tf = T.Compose([T.Resize(int(round(image_size / 0.875))), T.CenterCrop(image_size), T.ToTensor(), norm])
        try:
            self.train_set = datasets.ImageFolder(str(root / "train"), transform=train_tf)
            self.test_set = datasets.ImageFolder(str(root / "val"), transform=test_tf)
        except FileNotFoundError as e:  # a class folder without images
            raise DatasetNotFoundError(name, root, f"{expected} ({e})") from None
        if self.train_set.classes != self.test_set.classes:
            raise ValueError(f"{root}: train and val have different class folders")
        self.name = name
        self.root = root
        self.class_names = list(self.train_set.classes)
        self.num_classes = len(self.class_names)
        self.in_channels = 3
        self.image_size = image_size
        self.num_workers = num_workers

    @property
    def num_train(self) -> int:
        return len(self.train_set)

    @property
    def num_test(self) -> int:
        return len(self.test_set)

    def _loader(self, dataset, batch_size, shuffle, drop_last, seed=0, epoch=0):
        from torch.utils.data import DataLoader

        g = torch.Generator().manual_seed(int(seed) * 100003 + int(epoch))
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                          num_workers=self.num_workers, generator=g, pin_memory=torch.cuda.is_available(),
                          persistent_workers=False)

    def train_batches(self, batch_size, *, seed, epoch, device="cpu", drop_last=True) -> Iterator:
        # Worker seeds derive from the loader generator, so augmentation is reproducible per (seed, epoch).
        # Without workers the transforms draw from the global torch RNG: seed a forked copy of it.
        loader = self._loader(self.train_set, batch_size, True, drop_last, seed, epoch)
        if self.num_workers:
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            return
        it = iter(loader)
        for step in range(1 << 62):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((int(seed) * 100003 + int(epoch)) * 7919 + step)
                try:
                    x, y = next(it)
                except StopIteration:
                    return
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def test_batches(self, batch_size, *, device="cpu") -> Iterator:
        for x, y in self._loader(self.test_set, batch_size, False, False):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def load_imagenet(root: str | Path, *, image_size: int = 224, num_workers: int = 4) -> FolderClassificationData:
    """ImageNet (or any dataset) as an ImageFolder tree ``root/{train,val}/<class>/<image>``."""
    return FolderClassificationData(root, name="imagenet", image_size=image_size, num_workers=num_workers)
