"""syno.data: datasets for the proxy trainers (embedded digits, CIFAR-100, ImageNet, lm1b/text tokens)."""

from __future__ import annotations

from pathlib import Path

from .common import Augment, ClassificationData, DatasetNotFoundError, TensorClassificationData, default_data_dir
from .text import (ByteTokenizer, TokenData, get_tokenizer, gpt2_bpe_available, load_lm1b, load_tokens,
                   tokenize_files, tokenize_texts, write_tokens)
from .vision import FolderClassificationData, load_cifar100, load_digits, load_imagenet, read_cifar_pickle

DATASET_NAMES = ("digits", "cifar100", "imagenet", "lm1b")

__all__ = [
    "Augment", "ClassificationData", "DatasetNotFoundError", "TensorClassificationData", "default_data_dir",
    "ByteTokenizer", "TokenData", "get_tokenizer", "gpt2_bpe_available", "load_lm1b", "load_tokens",
    "tokenize_files", "tokenize_texts", "write_tokens", "FolderClassificationData", "load_cifar100",
    "load_digits", "load_imagenet", "read_cifar_pickle", "DATASET_NAMES", "load_dataset",
]


def _sub(data_dir: Path, name: str) -> Path:
    return data_dir / name if (data_dir / name).is_dir() else data_dir


def load_dataset(name: str, data_dir: str | Path | None = None, **kwargs):
    """Load dataset ``name`` (one of :data:`DATASET_NAMES`).

    ``data_dir`` (default :func:`default_data_dir`) may be the dataset directory itself or a parent
    holding ``cifar-100-python/``, ``imagenet/`` or ``lm1b/``. ``digits`` needs no directory.
    Extra keyword arguments go to the loader (e.g. ``image_size``, ``resize``, ``tokenizer``).
    """
    if name == "digits":
        return load_digits(**kwargs)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "cifar100":
        return load_cifar100(root, **kwargs)
    if name == "imagenet":
        return load_imagenet(_sub(root, "imagenet"), **kwargs)
    if name == "lm1b":
        return load_lm1b(_sub(root, "lm1b"), **kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose from {list(DATASET_NAMES)}")
