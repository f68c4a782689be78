import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from syno.data import (Augment, DatasetNotFoundError, TensorClassificationData, load_cifar100, load_dataset,
                       load_digits, load_imagenet, read_cifar_pickle)


def write_cifar100(root, n_train=12, n_test=6, seed=0):
    """The real format: cifar-100-python/{train,test,meta}, pickled dicts with bytes keys."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        obj = {b"filenames": [f"img{i}.png".encode() for i in range(n)], b"batch_label": split.encode(),
               b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": data}
        with open(d / split, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        out[split] = (data, fine)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}, f, protocol=2)
    return out


def test_cifar100_reads_real_format(tmp_path):
    written = write_cifar100(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-100-python"):
        ds = load_cifar100(root)
        assert ds.num_classes == 100 and ds.image_size == 32 and ds.in_channels == 3
        assert ds.num_train == 12 and ds.num_test == 6
        data, fine = written["train"]
        assert ds.train_images.dtype == torch.uint8
        assert torch.equal(ds.train_images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        assert ds.train_labels.tolist() == fine
        assert ds.class_names[:2] == ["class0", "class1"]
    x, y = next(ds.test_batches(4))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    ref = (torch.from_numpy(written["test"][0][:4].reshape(-1, 3, 32, 32)).float()
           - ds.mean.view(1, 3, 1, 1)) / ds.std.view(1, 3, 1, 1)
    assert torch.allclose(x, ref, atol=1e-5)
    # the original's resize-to-224 mode
    big = load_cifar100(tmp_path, resize=64)
    xb, _ = next(big.train_batches(4, seed=0, epoch=0))
    assert xb.shape == (4, 3, 64, 64) and big.image_size == 64


def test_cifar100_via_registry_and_missing_dir(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("cifar100", tmp_path / "nope")
    msg = str(e.value)
    assert str(tmp_path / "nope") in msg and "cifar-100-python" in msg and "'train'" in msg
    assert isinstance(e.value, FileNotFoundError)
    write_cifar100(tmp_path)
    assert load_dataset("cifar100", tmp_path).num_train == 12


def test_cifar_pickle_refuses_foreign_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for split in ("train", "test"):
        with open(d / split, "wb") as f:
            pickle.dump({b"data": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar100(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        read_cifar_pickle(d / "train")


def test_cifar_bad_content(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for split in ("train", "test"):
        with open(d / split, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        load_cifar100(tmp_path)
    for split in ("train", "test"):
        with open(d / split, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(ValueError, match="fine_labels"):
        load_cifar100(tmp_path)


def write_image_folder(root, classes=("cat", "dog"), per_class=3, size=(40, 30)):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for ci, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                ext = "png" if i % 2 else "JPEG"
                Image.fromarray(arr).save(root / split / c / f"{c}_{i}.{ext}")


def test_imagenet_image_folder(tmp_path):
    write_image_folder(tmp_path / "imagenet")
    ds = load_dataset("imagenet", tmp_path, image_size=24, num_workers=0)
    assert ds.num_classes == 2 and ds.class_names == ["cat", "dog"]
    assert ds.num_train == 6 and ds.num_test == 6 and ds.image_size == 24
    batches = list(ds.train_batches(4, seed=0, epoch=0))
    assert len(batches) == 1 and batches[0][0].shape == (4, 3, 24, 24)
    test = list(ds.test_batches(4))
    assert [len(y) for _, y in test] == [4, 2]
    assert sorted(torch.cat([y for _, y in test]).tolist()) == [0, 0, 0, 1, 1, 1]
    # reproducible augmentation for the same (seed, epoch)
    again = list(ds.train_batches(4, seed=0, epoch=0))
    assert torch.equal(again[0][0], batches[0][0])


def test_imagenet_missing_or_bad_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="ImageFolder"):
        load_imagenet(tmp_path / "missing")
    (tmp_path / "flat" / "train" / "a").mkdir(parents=True)
    (tmp_path / "flat" / "val").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "val" / "x.JPEG")  # val not sorted into classes
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "flat")):
        load_imagenet(tmp_path / "flat")


def test_digits_embedded():
    ds = load_digits()
    assert (ds.num_train, ds.num_test, ds.num_classes, ds.in_channels, ds.image_size) == (1437, 360, 10, 1, 16)
    assert sorted(set(ds.test_labels.tolist())) == list(range(10))
    again = load_digits()
    assert torch.equal(ds.test_images, again.test_images)  # fixed split
    assert load_digits(image_size=32).train_images.shape[-1] == 32
    assert load_dataset("digits").num_train == 1437
    n = sum(len(y) for _, y in ds.train_batches(128, seed=0, epoch=0))
    assert n == 1437 - 1437 % 128 == ds.num_train_batches(128) * 128


def _toy(augment, n=16, size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 2, size, size, generator=g)
    y = torch.arange(n) % 3
    return TensorClassificationData("toy", x, y, x[:4], y[:4], num_classes=3, augment=augment)


def test_augment_deterministic_and_correct():
    ds = _toy(Augment(crop_padding=2, flip=True, cutout=3))
    a = [x for x, _ in ds.train_batches(4, seed=1, epoch=0)]
    b = [x for x, _ in ds.train_batches(4, seed=1, epoch=0)]
    c = [x for x, _ in ds.train_batches(4, seed=1, epoch=1)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))

    plain = _toy(Augment())
    flip = _toy(Augment(flip=True))
    for (xp, yp), (xf, yf) in zip(plain.train_batches(16, seed=3, epoch=0), flip.train_batches(16, seed=3, epoch=0)):
        assert torch.equal(yp, yf)
        for u, v in zip(xp, xf):
            assert torch.equal(u, v) or torch.equal(u.flip(2), v)

    cut = _toy(Augment(cutout=3))
    for (xp, _), (xc, _) in zip(plain.train_batches(16, seed=3, epoch=0), cut.train_batches(16, seed=3, epoch=0)):
        changed = (xp != xc).sum(dim=(1, 2, 3))
        assert (changed <= 2 * 9).all() and changed.sum() > 0
        assert (xc[xp != xc] == 0).all()

    crop = _toy(Augment(crop_padding=1))
    for (xp, _), (xc, _) in zip(plain.train_batches(16, seed=3, epoch=0), crop.train_batches(16, seed=3, epoch=0)):
        # every crop is a shift by at most 1 pixel of the reflect-padded image
        padded = torch.nn.functional.pad(xp, (1, 1, 1, 1), mode="reflect")
        for i in range(16):
            assert any(torch.equal(padded[i, :, dy:dy + 8, dx:dx + 8], xc[i]) for dy in range(3) for dx in range(3))
