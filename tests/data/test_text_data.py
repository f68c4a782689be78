import json

import numpy as np
import pytest
import torch

from syno.data import (ByteTokenizer, DatasetNotFoundError, TokenData, get_tokenizer, load_dataset, load_lm1b,
                       load_tokens, tokenize_texts, write_tokens)


def test_token_bin_roundtrip_nanogpt_format(tmp_path):
    tokens = np.arange(1000) % 50257
    write_tokens(tokens, tmp_path / "train.bin", vocab_size=50257)
    write_tokens(tokens[:100], tmp_path / "val.bin", vocab_size=50257)
    raw = (tmp_path / "train.bin").read_bytes()
    assert len(raw) == 2000 and raw[:4] == bytes([0, 0, 1, 0])  # flat little-endian uint16, no header
    data = load_tokens(tmp_path)  # no meta.json: GPT-2 uint16 defaults
    assert data.vocab_size == 50257 and len(data.train) == 1000 and len(data.val) == 100
    g = torch.Generator().manual_seed(0)
    x, y = data.get_batch(4, 16, generator=g)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal((x + 1) % 1000, y)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(data.get_batch(4, 16, generator=g2)[0], x)
    xv, _ = data.get_batch(2, 8, generator=g, split="val")
    assert xv.max() < 100


def test_tokenize_texts_byte_fallback(tmp_path):
    out = tokenize_texts(["hello", "wörld"], tmp_path / "tok", val_docs=["val"], tokenizer="byte")
    meta = json.loads((out / "meta.json").read_text())
    assert meta == {"vocab_size": 257, "dtype": "uint16", "tokenizer": "byte", "eot_token": 256}
    data = load_tokens(out)
    tok = ByteTokenizer()
    assert list(data.train) == tok.encode("hello") + [256] + tok.encode("wörld") + [256]
    assert tok.decode(data.train) == "hellowörld"
    assert list(data.val) == tok.encode("val") + [256]


def test_auto_tokenizer_works_offline():
    tok = get_tokenizer("auto")
    assert tok.name in ("gpt2", "byte")
    assert tok.decode(tok.encode("syno")) == "syno"
    with pytest.raises(ValueError):
        get_tokenizer("sentencepiece")


def test_lm1b_raw_release_is_tokenized_once(tmp_path):
    base = tmp_path / "lm1b" / "1-billion-word-language-modeling-benchmark-r13output"
    (base / "training-monolingual.tokenized.shuffled").mkdir(parents=True)
    (base / "heldout-monolingual.tokenized.shuffled").mkdir(parents=True)
    (base / "training-monolingual.tokenized.shuffled" / "news.en-00001-of-00100").write_text("a b .\n\ncd .\n")
    (base / "heldout-monolingual.tokenized.shuffled" / "news.en.heldout-00000-of-00050").write_text("z .\n")
    data = load_dataset("lm1b", tmp_path, tokenizer="byte")
    assert list(data.train) == list(b"a b .") + [256] + list(b"cd .") + [256]
    assert list(data.val) == list(b"z .") + [256]
    cache = tmp_path / "lm1b" / "tokens-byte"
    assert (cache / "train.bin").is_file()
    mtime = (cache / "train.bin").stat().st_mtime_ns
    load_lm1b(tmp_path / "lm1b", tokenizer="byte")
    assert (cache / "train.bin").stat().st_mtime_ns == mtime


def test_missing_and_bad_token_dirs(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train.bin"):
        load_dataset("lm1b", tmp_path / "nothing")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "train.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="multiple of 2"):
        load_tokens(tmp_path / "odd")
    with pytest.raises(ValueError, match="out of range"):
        write_tokens([5, 300], tmp_path / "x.bin", vocab_size=257)


def test_token_data_from_tensor():
    d = TokenData.from_tensor(torch.arange(50) % 7, vocab_size=7)
    x, y = d.get_batch(3, 5, generator=torch.Generator().manual_seed(1))
    assert x.shape == (3, 5)
    with pytest.raises(ValueError, match="fewer than"):
        d.get_batch(1, 60, generator=torch.Generator())
