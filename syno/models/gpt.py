"""A minGPT-style GPT-2 (pre-LN transformer decoder) with a configurable size.

The defaults are GPT-2 small (12 layers, 12 heads, width 768, vocabulary 50257). The
attention matmuls live in :class:`AttentionCore`, which implements the ``count_macs`` protocol of
:mod:`syno.models.profile` so the profiler counts them (thop, used by the original, does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GPTConfig", "GPT", "AttentionCore"]


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    seq_len: int = 1024       # block size: the longest sequence the position embedding covers
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.1
    bias: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class AttentionCore(nn.Module):
    """Causal multi-head attention on a packed ``[N, T, 3C]`` q/k/v tensor -> ``[N, T, C]``."""

    def __init__(self, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        n, t, c3 = qkv.shape
        if c3 % 3:
            raise ValueError(f"attention input width {c3} is not 3 * n_embd")
        c = c3 // 3
        q, k, v = qkv.split(c, dim=2)
        shape = (n, t, self.n_head, c // self.n_head)
        q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return y.transpose(1, 2).reshape(n, t, c)

    def count_macs(self, inp: torch.Tensor, out: torch.Tensor) -> int:
        # Q K^T and A V, both dense T x T (the causal mask does not reduce dense-kernel work).
        n, t, c3 = inp.shape
        return 2 * n * t * t * (c3 // 3)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.core = AttentionCore(cfg.n_head, cfg.dropout)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resid_dropout(self.c_proj(self.core(self.c_attn(x))))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """``forward(idx: LongTensor[N, T]) -> logits[N, T, vocab_size]`` (T <= seq_len)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """minGPT init: N(0, 0.02) for Linear/Embedding, zero biases, LayerNorm (1, 0), and the
        residual projections scaled by 1/sqrt(2 n_layer)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.config.n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        n, t = idx.shape
        if t > self.config.seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's seq_len {self.config.seq_len}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
