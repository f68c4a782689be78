"""Shared pieces of the dataset loaders: errors, the default data directory, in-memory image tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.nn import functional as F

__all__ = ["DatasetNotFoundError", "default_data_dir", "Augment", "ClassificationData", "TensorClassificationData"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset directory is missing or does not have the expected layout."""

    def __init__(self, dataset: str, path: str | os.PathLike, expected: str):
        self.dataset, self.path, self.expected = dataset, Path(path), expected
        super().__init__(f"{dataset} not found at {str(path)!r}: expected {expected}")


def default_data_dir() -> Path:
    """``$SYNO_DATA_DIR`` if set, else ``~/data`` (the original's ``--root``)."""
    return Path(os.environ.get("SYNO_DATA_DIR", "~/data")).expanduser()


@dataclass(frozen=True)
class Augment:
    """Per-batch training augmentation of in-memory images (applied on the training device)."""

    crop_padding: int = 0   # reflect-pad by this many pixels, then random crop back to size
    flip: bool = False      # random horizontal flip, p = 0.5
    cutout: int = 0         # side of one random zeroed square (centre anywhere in the image)


class ClassificationData:
    """Interface the vision trainer uses: batches of (normalized float images, int64 labels)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int

    @property
    def num_train(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def num_test(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, device: torch.device | str = "cpu",
                      drop_last: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def test_batches(self, batch_size: int, *, device: torch.device | str = "cpu"
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def num_train_batches(self, batch_size: int, drop_last: bool = True) -> int:
        return self.num_train // batch_size if drop_last else -(-self.num_train // batch_size)


class TensorClassificationData(ClassificationData):
    """A whole image dataset held in memory (``[N, C, H, W]`` tensors of any dtype, e.g. uint8).

    Batches are normalized with the per-channel ``mean``/``std`` of the training set (in the units of
    the stored tensor), augmented per batch (:class:`Augment`), and bilinearly resized to ``resize``
    if given (the original resized CIFAR batches to 224). The tensors move to the training device
    once, on first use there.
    """

    def __init__(self, name: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, num_classes: int, *, augment: Augment = Augment(),
                 resize: int | None = None, class_names: list[str] | None = None):
        if train_x.dim() != 4 or test_x.dim() != 4:
            raise ValueError("images must be [N, C, H, W]")
        if len(train_x) != len(train_y) or len(test_x) != len(test_y):
            raise ValueError("image and label counts differ")
        self.name = name
        self.num_classes = num_classes
        self.augment = augment
        self.resize = resize
        self.class_names = class_names
        self.in_channels = int(train_x.shape[1])
        self.image_size = int(resize or train_x.shape[2])
        xf = train_x.float()
        self.mean = xf.mean(dim=(0, 2, 3))
        self.std = xf.std(dim=(0, 2, 3)).clamp_min(1e-6)
        self._cpu = (train_x, train_y.long(), test_x, test_y.long())
        self._on: dict[str, tuple[torch.Tensor, ...]] = {}

    @property
    def train_images(self) -> torch.Tensor:
        return self._cpu[0]

    @property
    def train_labels(self) -> torch.Tensor:
        return self._cpu[1]

    @property
    def test_images(self) -> torch.Tensor:
        return self._cpu[2]

    @property
    def test_labels(self) -> torch.Tensor:
        return self._cpu[3]

    @property
    def num_train(self) -> int:
        return len(self._cpu[0])

    @property
    def num_test(self) -> int:
        return len(self._cpu[2])

    def _tensors(self, device) -> tuple[torch.Tensor, ...]:
        key = str(torch.device(device))
        if key not in self._on:
            if torch.device(device).type == "cpu":
                self._on[key] = self._cpu
            else:
                self._on[key] = tuple(t.to(device) for t in self._cpu)
        return self._on[key]

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.device).view(1, -1, 1, 1)
        std = self.std.to(x.device).view(1, -1, 1, 1)
        return (x.float() - mean) / std

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize and self.resize != x.shape[-1]:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        a = self.augment
        n, c, h, w = x.shape
        dev = x.device
        if a.crop_padding:
            p = a.crop_padding
            xp = F.pad(x, (p, p, p, p), mode="reflect")
            oy = torch.randint(0, 2 * p + 1, (n,), generator=g).to(dev)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=g).to(dev)
            rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
            x = xp[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                   rows, cols]
        if a.flip:
            flip = (torch.rand(n, generator=g) < 0.5).to(dev)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if a.cutout:
            cy = torch.randint(0, h, (n,), generator=g).to(dev)
            cx = torch.randint(0, w, (n,), generator=g).to(dev)
            lo = a.cutout // 2
            ys = torch.arange(h, device=dev)[None, :, None]
            xs = torch.arange(w, device=dev)[None, None, :]
            y0, x0 = (cy - lo)[:, None, None], (cx - lo)[:, None, None]
            hole = (ys >= y0) & (ys < y0 + a.cutout) & (xs >= x0) & (xs < x0 + a.cutout)
            x = x.masked_fill(hole[:, None], 0.0)
        return x

    def train_batches(self, batch_size, *, seed, epoch, device="cpu", drop_last=True):
        tx, ty, _, _ = self._tensors(device)
        g = torch.Generator().manual_seed(int(seed) * 100003 + int(epoch))
        perm = torch.randperm(len(tx), generator=g)
        stop = len(tx) - len(tx) % batch_size if drop_last else len(tx)
        for i in range(0, stop, batch_size):
            idx = perm[i:i + batch_size].to(tx.device)
            x = self._normalize(tx[idx])
            yield self._resize(self._augment(x, g)), ty[idx]

    def test_batches(self, batch_size, *, device="cpu"):
        _, _, vx, vy = self._tensors(device)
        for i in range(0, len(vx), batch_size):
            yield self._resize(self._normalize(vx[i:i + batch_size])), vy[i:i + batch_size]
