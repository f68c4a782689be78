"""Model registry: ``build_model(name, ...)`` and ``MODEL_NAMES``."""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import nn

from .gpt import GPT, GPTConfig
from .placeholder import build_mappings, replace_linears
from .vision import VISION_MODELS, build_vision_model, mark_placeholders

__all__ = ["MODEL_NAMES", "VISION_MODEL_NAMES", "build_model", "sample_input", "input_spec"]

VISION_MODEL_NAMES: tuple[str, ...] = tuple(VISION_MODELS)
MODEL_NAMES: tuple[str, ...] = VISION_MODEL_NAMES + ("gpt2",)

_GPT_KEYS = {f.name for f in fields(GPTConfig)}


def build_model(name: str, num_classes: int | None = None, image_size: int | None = None, *,
                in_channels: int | None = None, placeholders: bool = True, mapping_batch: int = 1,
                exclude_small: bool = True, **config) -> nn.Module:
    """Build zoo model ``name``; with ``placeholders`` mark its replaceable layers and record mappings.

    Vision models (``VISION_MODEL_NAMES``): ``num_classes`` (default 100; tiny: 10), ``image_size``
    (default 32; tiny: 16; <= 64 selects the CIFAR stem), ``in_channels`` (default 3; tiny: 1).
    ``tiny`` also takes ``width``. ``gpt2``: keyword options of :class:`GPTConfig`
    (``vocab_size, seq_len, n_layer, n_head, n_embd, dropout, bias``); ``num_classes``/``image_size``
    are ignored.

    The mapping pass runs on the meta device with batch ``mapping_batch`` (the ``N`` every mapping
    records; use the training batch size when operators are specialized to N). Placeholders below
    the size threshold are removed when ``exclude_small``. The per-sample input shape and dtype are
    stored on the model as ``model.input_spec = (shape, dtype)``; see :func:`sample_input`.
    """
    if name == "gpt2":
        unknown = set(config) - _GPT_KEYS
        if unknown:
            raise TypeError(f"unknown gpt2 options {sorted(unknown)}; allowed: {sorted(_GPT_KEYS)}")
        cfg = GPTConfig(**config)
        model: nn.Module = GPT(cfg)
        model.input_spec = ((cfg.seq_len,), torch.long)
        if placeholders:
            replace_linears(model, lambda qname, _: qname.endswith("attn.c_attn"), bias=False)
    elif name in VISION_MODELS:
        tiny = name == "tiny"
        num_classes = num_classes if num_classes is not None else (10 if tiny else 100)
        image_size = image_size if image_size is not None else (16 if tiny else 32)
        in_channels = in_channels if in_channels is not None else (1 if tiny else 3)
        model = build_vision_model(name, num_classes=num_classes, image_size=image_size,
                                   in_channels=in_channels, **config)
        model.input_spec = ((in_channels, image_size, image_size), torch.float32)
        if placeholders:
            mark_placeholders(model, name)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {list(MODEL_NAMES)}")
    model.model_name = name
    if placeholders:
        build_mappings(model, sample_input(model, mapping_batch, device="meta"), exclude_small=exclude_small)
    return model


def input_spec(model: nn.Module) -> tuple[tuple[int, ...], torch.dtype]:
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise ValueError("model has no input_spec; build it with syno.models.build_model or pass an input")
    return spec


def sample_input(model: nn.Module, batch_size: int = 1, device: str | torch.device = "cpu") -> torch.Tensor:
    """A zero input batch of the model's input shape (token ids for gpt2, images otherwise)."""
    shape, dtype = input_spec(model)
    return torch.zeros((batch_size, *shape), dtype=dtype, device=device)
