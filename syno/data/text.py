"""Token datasets for language modelling (lm1b or any text).

On-disk format (nanoGPT style), one directory:

* ``train.bin``: the training token stream, a flat array of little-endian unsigned integers (no header);
* ``val.bin`` (optional): the validation stream, same encoding;
* ``meta.json`` (optional): ``{"vocab_size": int, "dtype": "uint16" | "uint32", "tokenizer": str,
  "eot_token": int}``. Without it the files are read as uint16 GPT-2 BPE tokens (vocab 50257).

Documents are joined with the end-of-text token (GPT-2's 50256, which the original used as BOS).
Tokenizers: GPT-2 BPE through ``tiktoken`` when it is installed *and* its BPE files are already in
the tiktoken cache (nothing is downloaded), else a byte-level tokenizer (256 byte values + EOT = 257).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .common import DatasetNotFoundError

__all__ = ["Tokenizer", "ByteTokenizer", "get_tokenizer", "gpt2_bpe_available", "write_tokens",
           "tokenize_texts", "tokenize_files", "TokenData", "load_tokens", "load_lm1b"]

GPT2_VOCAB_SIZE = 50257
GPT2_EOT = 50256
_GPT2_FILES = ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
               "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json")


class Tokenizer:
    name: str
    vocab_size: int
    eot_token: int

    def encode(self, text: str) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, tokens: Iterable[int]) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens 0..255; 256 is end-of-text."""

    name = "byte"
    vocab_size = 257
    eot_token = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, tokens: Iterable[int]) -> str:
        return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")


class _TiktokenGPT2(Tokenizer):
    name = "gpt2"
    vocab_size = GPT2_VOCAB_SIZE
    eot_token = GPT2_EOT

    def __init__(self):
        import tiktoken

        self._enc = tiktoken.get_encoding("gpt2")

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.uint16)

    def decode(self, tokens: Iterable[int]) -> str:
        return self._enc.decode(list(tokens))


def _tiktoken_cache_dir() -> Path:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return Path(os.environ["DATA_GYM_CACHE_DIR"])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def gpt2_bpe_available() -> bool:
    """tiktoken is importable and the GPT-2 BPE files are in its cache (so no download would happen)."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return False
    cache = _tiktoken_cache_dir()
    return all((cache / hashlib.sha1(url.encode()).hexdigest()).is_file() for url in _GPT2_FILES)


def get_tokenizer(name: str = "auto") -> Tokenizer:
    """``"gpt2"`` (needs :func:`gpt2_bpe_available`), ``"byte"``, or ``"auto"`` (gpt2 if available, else byte)."""
    if name == "auto":
        name = "gpt2" if gpt2_bpe_available() else "byte"
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        if not gpt2_bpe_available():
            raise RuntimeError("GPT-2 BPE needs the 'tiktoken' package (extra 'text') and its cached BPE files "
                               f"in {_tiktoken_cache_dir()} (set TIKTOKEN_CACHE_DIR); use tokenizer='byte' offline")
        return _TiktokenGPT2()
    raise ValueError(f"unknown tokenizer {name!r}; use 'auto', 'gpt2' or 'byte'")


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def write_tokens(tokens, path: str | Path, vocab_size: int) -> Path:
    """Write a token stream as a flat little-endian uint16 (uint32 if vocab > 65536) ``.bin`` file."""
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(f"tokens out of range [0, {vocab_size})")
    path = Path(path)
    arr.astype(_dtype_for(vocab_size)).tofile(path)
    return path


def _write_meta(out: Path, tok: Tokenizer) -> None:
    meta = {"vocab_size": tok.vocab_size, "dtype": _dtype_for(tok.vocab_size).name, "tokenizer": tok.name,
            "eot_token": tok.eot_token}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _encode_docs(docs: Iterable[str], tok: Tokenizer, f) -> int:
    n = 0
    eot = np.asarray([tok.eot_token], dtype=_dtype_for(tok.vocab_size))
    for doc in docs:
        if not doc:
            continue
        arr = tok.encode_array(doc).astype(_dtype_for(tok.vocab_size))
        arr.tofile(f)
        eot.tofile(f)
        n += len(arr) + 1
    return n


def tokenize_texts(train_docs: Iterable[str], out_dir: str | Path, *, val_docs: Iterable[str] | None = None,
                   tokenizer: str | Tokenizer = "auto") -> Path:
    """Tokenize documents into ``out_dir/{train.bin, val.bin, meta.json}`` (each document + EOT)."""
    tok = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.bin", "wb") as f:
        _encode_docs(train_docs, tok, f)
    if val_docs is not None:
        with open(out / "val.bin", "wb") as f:
            _encode_docs(val_docs, tok, f)
    _write_meta(out, tok)
    return out


def _lines(paths: Iterable[Path]) -> Iterable[str]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line


def _whole_files(paths: Iterable[Path]) -> Iterable[str]:
    for p in paths:
        yield Path(p).read_text(encoding="utf-8", errors="replace")


def tokenize_files(train_files: list[Path], out_dir: str | Path, *, val_files: list[Path] | None = None,
                   tokenizer: str | Tokenizer = "auto", line_documents: bool = False) -> Path:
    """Tokenize text files (each file one document, or each line with ``line_documents``, as in lm1b)."""
    docs = _lines if line_documents else _whole_files
    return tokenize_texts(docs(train_files), out_dir, val_docs=docs(val_files) if val_files else None,
                          tokenizer=tokenizer)


@dataclass
class TokenData:
    """Token streams for LM training; ``get_batch`` draws random windows (nanoGPT style)."""

    train: np.ndarray
    val: np.ndarray | None
    vocab_size: int
    tokenizer: str = "gpt2"
    eot_token: int | None = None
    name: str = "tokens"

    def get_batch(self, batch_size: int, seq_len: int, *, generator: torch.Generator, split: str = "train",
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        data = self.train if split == "train" else self.val
        if data is None:
            raise ValueError(f"no {split} split")
        if len(data) < seq_len + 1:
            raise ValueError(f"{split} split has {len(data)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
        starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator).tolist()
        chunk = np.stack([np.asarray(data[s:s + seq_len + 1], dtype=np.int64) for s in starts])
        t = torch.from_numpy(chunk)
        return t[:, :-1].to(device), t[:, 1:].to(device)

    @classmethod
    def from_tensor(cls, tokens: torch.Tensor | np.ndarray, vocab_size: int, *, val=None, name: str = "tokens"):
        arr = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens).astype(np.int64)
        v = None if val is None else np.asarray(val.cpu() if isinstance(val, torch.Tensor) else val).astype(np.int64)
        return cls(train=arr, val=v, vocab_size=vocab_size, tokenizer="custom", name=name)


def load_tokens(root: str | Path, *, name: str = "tokens") -> TokenData:
    """Load ``root/train.bin`` (+ ``val.bin``, ``meta.json``) as memory-mapped token streams."""
    root = Path(root).expanduser()
    if not (root / "train.bin").is_file():
        raise DatasetNotFoundError(name, root, "a token directory with 'train.bin' (flat little-endian uint16 "
                                               "tokens), optional 'val.bin' and 'meta.json'")
    meta = {"vocab_size": GPT2_VOCAB_SIZE, "dtype": "uint16", "tokenizer": "gpt2", "eot_token": GPT2_EOT}
    if (root / "meta.json").is_file():
        meta.update(json.loads((root / "meta.json").read_text()))
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")

    def mm(p: Path):
        if p.stat().st_size % dtype.itemsize:
            raise ValueError(f"{p}: size is not a multiple of {dtype.itemsize} bytes ({meta['dtype']})")
        return np.memmap(p, dtype=dtype, mode="r") if p.stat().st_size else np.zeros(0, dtype)

    train = mm(root / "train.bin")
    val = mm(root / "val.bin") if (root / "val.bin").is_file() else None
    if len(train) and int(train.max()) >= meta["vocab_size"]:
        raise ValueError(f"{root / 'train.bin'}: token {int(train.max())} >= vocab_size {meta['vocab_size']}")
    return TokenData(train=train, val=val, vocab_size=int(meta["vocab_size"]), tokenizer=meta["tokenizer"],
                     eot_token=meta.get("eot_token"), name=name)


_LM1B_TRAIN = "training-monolingual.tokenized.shuffled"
_LM1B_HELDOUT = "heldout-monolingual.tokenized.shuffled"


def load_lm1b(root: str | Path, *, tokenizer: str = "auto", cache_dir: str | Path | None = None) -> TokenData:
    """lm1b as tokens. ``root`` is either a token directory (``train.bin``; see module doc) or the
    extracted lm1b release (``[1-billion-word-language-modeling-benchmark-r13output/]
    training-monolingual.tokenized.shuffled/news.en-*`` and ``heldout-.../news.en.heldout-*``),
    which is tokenized once (one sentence per document) into ``cache_dir`` (default
    ``root/tokens-<tokenizer>``) and reused."""
    root = Path(root).expanduser()
    if (root / "train.bin").is_file():
        return load_tokens(root, name="lm1b")
    base = root / "1-billion-word-language-modeling-benchmark-r13output"
    base = base if base.is_dir() else root
    train_files = sorted((base / _LM1B_TRAIN).glob("news.en-*")) if (base / _LM1B_TRAIN).is_dir() else []
    if not train_files:
        raise DatasetNotFoundError("lm1b", root, "a token directory with 'train.bin', or the lm1b release with "
                                                 f"'{_LM1B_TRAIN}/news.en-*' text files")
    tok = get_tokenizer(tokenizer)
    cache = Path(cache_dir) if cache_dir else root / f"tokens-{tok.name}"
    if not (cache / "train.bin").is_file():
        val_files = sorted((base / _LM1B_HELDOUT).glob("news.en.heldout-*")) if (base / _LM1B_HELDOUT).is_dir() else None
        tmp = cache.with_name(cache.name + ".partial")
        tokenize_files(train_files, tmp, val_files=val_files or None, tokenizer=tok, line_documents=True)
        tmp.rename(cache)
    return load_tokens(cache, name="lm1b")
