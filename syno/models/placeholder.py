"""Placeholders: layers of a model that a synthesized operator may replace.

A :class:`Placeholder` wraps the layer it stands for (``referred_layer``) and runs it until an
operator is swapped in with :meth:`Placeholder.fill`; :meth:`Placeholder.reset` swaps the original
back. Neither rebuilds the model, so one model can evaluate many operators in turn.

The concrete sizes a placeholder sees (its *mapping*, e.g. ``{"N": 128, "C_in": 64, "C_out": 128,
"H": 28}``) are recorded by one forward pass in "mapping mode" (:func:`build_mappings`). One operator
is evaluated under all the mappings of a model (:func:`model_mappings`), and
:func:`fill_placeholders` instantiates it once per mapping.

While filled, the referred layer is kept out of the module tree (so ``model.parameters()``,
``state_dict()`` and parameter counts see only the operator) but still follows ``model.to(...)``.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

Mapping = dict[str, int]
OperatorFactory = Callable[[Mapping], nn.Module]

__all__ = [
    "Placeholder",
    "ConvPlaceholder",
    "LinearPlaceholder",
    "placeholders",
    "build_mappings",
    "model_mappings",
    "fill_placeholders",
    "reset_placeholders",
    "remove_unsatisfied_placeholders",
    "replace_convs",
    "same_padding",
    "MIN_PLACEHOLDER_SIZE",
]

#: Placeholders with any of H, W, C_in, C_out (or H_in, H_out) below this are excluded (as in the original).
MIN_PLACEHOLDER_SIZE = 4


class Placeholder(nn.Module):
    """Base class: a layer to be replaced. Subclasses define the mapping and the exclusion rule."""

    def __init__(self, referred_layer: nn.Module):
        super().__init__()
        self.referred_layer: nn.Module | None = referred_layer
        self.kernel: nn.Module | None = None
        # The referred layer while filled, in a list so nn.Module does not register it.
        self._stash: list[nn.Module] = []
        self.mapping: Mapping | None = None
        self._recording = False

    # ----------------------------------------------------------------------------------- state
    @property
    def is_filled(self) -> bool:
        return self.kernel is not None

    @property
    def original_layer(self) -> nn.Module:
        """The referred (original) layer, whether or not the placeholder is filled."""
        if self._stash:
            return self._stash[0]
        assert self.referred_layer is not None
        return self.referred_layer

    @property
    def active_layer(self) -> nn.Module:
        return self.kernel if self.kernel is not None else self.original_layer

    def fill(self, module: nn.Module) -> None:
        """Run ``module`` instead of the referred layer (replacing any earlier fill)."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"fill() needs an nn.Module, got {type(module).__name__}")
        if self.kernel is None:
            self._stash = [self.original_layer]
            self.referred_layer = None
        self.kernel = module

    def reset(self) -> nn.Module | None:
        """Put the referred layer back; returns the operator that was filled in (or None)."""
        kernel = self.kernel
        if kernel is None:
            return None
        original = self._stash.pop()
        self.kernel = None
        self.referred_layer = original
        return kernel

    def _apply(self, fn, recurse=True):  # keep the stashed original on the model's device/dtype
        super()._apply(fn, recurse)
        if self._stash and recurse:
            self._stash[0]._apply(fn, recurse)
        return self

    # --------------------------------------------------------------------------------- mapping
    def compute_mapping(self, x: torch.Tensor, y: torch.Tensor) -> Mapping:  # pragma: no cover
        raise NotImplementedError

    def satisfied(self) -> bool:
        """Whether the recorded mapping is large enough to be worth replacing."""
        raise NotImplementedError  # pragma: no cover

    def restored_layer(self) -> nn.Module:
        """What replaces this placeholder (and its wrapper) when it is excluded."""
        return self.original_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.active_layer(x)
        if self._recording:
            self.mapping = self.compute_mapping(x, y)
        return y

    def extra_repr(self) -> str:
        return f"mapping={self.mapping}, filled={self.is_filled}"


class ConvPlaceholder(Placeholder):
    """``[N, C_in, H, H] -> [N, C_out, H, H]`` (same spatial size). Mapping ``{N, C_in, C_out, H}``.

    ``W`` is added to the mapping only for non-square inputs (the operator specs assume square).
    ``downsample`` is True when the placeholder stands for a stride-2 conv and sits behind an
    ``AvgPool2d(2)`` inside a :class:`PooledPlaceholder`.
    """

    def __init__(self, referred_layer: nn.Conv2d, downsample: bool = False):
        super().__init__(referred_layer)
        self.in_channels = referred_layer.in_channels
        self.out_channels = referred_layer.out_channels
        self.kernel_size = tuple(referred_layer.kernel_size)
        self.groups = referred_layer.groups
        self.downsample = downsample
        self.input_hw: tuple[int, int] | None = None

    def compute_mapping(self, x, y):
        if x.dim() != 4 or y.dim() != 4:
            raise ValueError(f"ConvPlaceholder expects 4-D tensors, got {tuple(x.shape)} -> {tuple(y.shape)}")
        n, c_in, h, w = x.shape
        if tuple(y.shape[2:]) != (h, w) or y.shape[0] != n:
            raise ValueError(f"ConvPlaceholder must keep N and spatial size: {tuple(x.shape)} -> {tuple(y.shape)}")
        self.input_hw = (int(h), int(w))
        m = {"N": int(n), "C_in": int(c_in), "C_out": int(y.shape[1]), "H": int(h)}
        if w != h:
            m["W"] = int(w)
        return m

    def satisfied(self) -> bool:
        if self.mapping is None:
            return False
        h, w = self.input_hw or (self.mapping["H"], self.mapping.get("W", self.mapping["H"]))
        return min(h, w, self.mapping["C_in"], self.mapping["C_out"]) >= MIN_PLACEHOLDER_SIZE

    def restored_layer(self) -> nn.Module:
        ref = self.original_layer
        if not self.downsample:
            return ref
        # Rebuild the original stride-2 conv with the referred layer's weights.
        conv = nn.Conv2d(ref.in_channels, ref.out_channels, ref.kernel_size, stride=2, padding=ref.padding,
                         dilation=ref.dilation, groups=ref.groups, bias=ref.bias is not None,
                         padding_mode=ref.padding_mode, device=ref.weight.device, dtype=ref.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(ref.weight)
            if ref.bias is not None:
                conv.bias.copy_(ref.bias)
        return conv


class PooledPlaceholder(nn.Sequential):
    """``AvgPool2d(2, ceil_mode=True)`` followed by a :class:`ConvPlaceholder`: stands for a stride-2 conv.

    ``ceil_mode`` makes the output size equal the stride-2 conv's for odd inputs too
    (``ceil(H/2)`` for a same-padded conv), which the original's plain ``AvgPool2d(2)`` does not.
    """

    def __init__(self, placeholder: ConvPlaceholder):
        super().__init__(nn.AvgPool2d(2, ceil_mode=True), placeholder)

    @property
    def placeholder(self) -> ConvPlaceholder:
        return self[1]


class LinearPlaceholder(Placeholder):
    """``[N, seq_len, H_in] -> [N, seq_len, H_out]``. Mapping ``{N, seq_len, H_in, H_out}``."""

    def __init__(self, referred_layer: nn.Linear):
        super().__init__(referred_layer)
        self.in_features = referred_layer.in_features
        self.out_features = referred_layer.out_features

    def compute_mapping(self, x, y):
        if x.dim() != 3 or y.dim() != 3:
            raise ValueError(f"LinearPlaceholder expects [N, seq_len, H] tensors, got {tuple(x.shape)} -> {tuple(y.shape)}")
        n, t, h_in = x.shape
        return {"N": int(n), "seq_len": int(t), "H_in": int(h_in), "H_out": int(y.shape[2])}

    def satisfied(self) -> bool:
        return self.mapping is not None and min(self.mapping["H_in"], self.mapping["H_out"]) >= MIN_PLACEHOLDER_SIZE


# ------------------------------------------------------------------------------------------- helpers
def placeholders(model: nn.Module) -> list[Placeholder]:
    """All placeholders of ``model`` in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, Placeholder)]


def model_mappings(model: nn.Module) -> list[Mapping]:
    """One mapping per placeholder (module order). Raises if the mapping pass has not run."""
    out = []
    for i, p in enumerate(placeholders(model)):
        if p.mapping is None:
            raise RuntimeError(f"placeholder {i} has no mapping; run build_mappings(model, sample_input) first")
        out.append(dict(p.mapping))
    return out


def _record(model: nn.Module, sample_input) -> None:
    phs = placeholders(model)
    was_training = model.training
    model.eval()
    try:
        for p in phs:
            p.mapping = None
            p._recording = True
        with torch.no_grad():
            model(sample_input)
    finally:
        for p in phs:
            p._recording = False
        model.train(was_training)
    missing = [i for i, p in enumerate(phs) if p.mapping is None]
    if missing:
        raise RuntimeError(f"placeholders {missing} were not reached by the mapping forward pass")


def build_mappings(model: nn.Module, sample_input: torch.Tensor, *, exclude_small: bool = True) -> list[Mapping]:
    """Record every placeholder's mapping with one forward pass of ``sample_input`` (eval mode, no grad).

    ``N`` of each mapping is ``sample_input.shape[0]``. If ``sample_input`` lives on the ``meta``
    device, the pass runs on a meta-device copy of the model: only shapes are computed, so any batch
    size is free. With ``exclude_small`` the placeholders whose H, W, C_in or C_out is below
    :data:`MIN_PLACEHOLDER_SIZE` are replaced by their original layers
    (:func:`remove_unsatisfied_placeholders`). Returns :func:`model_mappings`.
    """
    if isinstance(sample_input, torch.Tensor) and sample_input.device.type == "meta":
        shadow = copy.deepcopy(model).to("meta")
        _record(shadow, sample_input)
        for p, q in zip(placeholders(model), placeholders(shadow), strict=True):
            p.mapping = q.mapping
            if isinstance(p, ConvPlaceholder):
                p.input_hw = q.input_hw
    else:
        _record(model, sample_input)
    if exclude_small:
        remove_unsatisfied_placeholders(model)
    return model_mappings(model)


def _parent_map(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    parents = {}
    for parent in model.modules():
        for name, child in parent.named_children():
            parents[id(child)] = (parent, name)
    return parents


def remove_unsatisfied_placeholders(model: nn.Module) -> int:
    """Replace excluded placeholders by their original layers. A stride-2 placeholder (AvgPool + placeholder)
    gets its original stride-2 conv back. Returns the number removed."""
    parents = _parent_map(model)
    removed = 0
    for p in placeholders(model):
        if p.satisfied():
            continue
        if id(p) not in parents:
            raise RuntimeError("cannot remove a placeholder that is the model itself")
        parent, name = parents[id(p)]
        replacement = p.restored_layer()
        if isinstance(parent, PooledPlaceholder):  # drop the AvgPool too: the stride-2 conv comes back
            parent, name = parents[id(parent)]
        _set_child(parent, name, replacement)
        removed += 1
    return removed


def fill_placeholders(model: nn.Module, factory: OperatorFactory) -> list[nn.Module]:
    """Fill every placeholder with ``factory(mapping)`` (one operator, instantiated per mapping).

    The new module is moved to the device of the placeholder's original layer. Returns the modules.
    """
    filled = []
    for i, p in enumerate(placeholders(model)):
        if p.mapping is None:
            raise RuntimeError(f"placeholder {i} has no mapping; run build_mappings(model, sample_input) first")
        module = factory(dict(p.mapping))
        if not isinstance(module, nn.Module):
            raise TypeError(f"factory returned {type(module).__name__} for placeholder {i}, expected nn.Module")
        ref_tensors = list(p.original_layer.parameters()) or list(p.original_layer.buffers())
        if ref_tensors:
            module = module.to(ref_tensors[0].device)
        p.fill(module)
        filled.append(module)
    return filled


def reset_placeholders(model: nn.Module) -> None:
    """Put every placeholder's original layer back."""
    for p in placeholders(model):
        p.reset()


# ----------------------------------------------------------------------------------- conv rewriting
def same_padding(conv: nn.Conv2d) -> bool:
    """``k == 2p + 1`` in both dims (the original's "same padding" test), no dilation, zero padding."""
    if isinstance(conv.padding, str):
        return conv.padding == "same"
    return (all(k == 2 * p + 1 for k, p in zip(conv.kernel_size, conv.padding))
            and tuple(conv.dilation) == (1, 1) and conv.padding_mode == "zeros")


def _stride1_copy(conv: nn.Conv2d) -> nn.Conv2d:
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=1, padding=conv.padding,
                    groups=conv.groups, bias=conv.bias is not None,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(conv.weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def replace_convs(model: nn.Module, keep_filter: Callable[[nn.Conv2d], bool]) -> int:
    """Replace every ``nn.Conv2d`` with same padding, stride 1 or 2 and ``keep_filter(conv)`` True.

    Stride 1: the conv itself becomes the placeholder's referred layer (weights kept). Stride 2:
    ``AvgPool2d(2) + ConvPlaceholder(stride-1 copy of the conv)``. Returns the number replaced.
    """
    count = 0

    def visit(module: nn.Module) -> None:
        nonlocal count
        for name, child in list(module.named_children()):
            if isinstance(child, (Placeholder, PooledPlaceholder)):
                continue
            if (isinstance(child, nn.Conv2d) and not isinstance(child, nn.LazyConv2d)
                    and same_padding(child) and tuple(child.stride) in ((1, 1), (2, 2)) and keep_filter(child)):
                if tuple(child.stride) == (1, 1):
                    new: nn.Module = ConvPlaceholder(child)
                else:
                    new = PooledPlaceholder(ConvPlaceholder(_stride1_copy(child), downsample=True))
                _set_child(module, name, new)
                count += 1
            else:
                visit(child)

    visit(model)
    return count


def _set_child(parent: nn.Module, name: str, new: nn.Module) -> None:
    setattr(parent, name, new)  # works for Sequential/ModuleList too (their children are named "0", "1", ...)


def replace_linears(model: nn.Module, predicate: Callable[[str, nn.Linear], bool], *,
                    bias: bool | None = None) -> int:
    """Replace ``nn.Linear`` layers whose qualified name satisfies ``predicate`` by :class:`LinearPlaceholder`.

    ``bias=False`` makes the referred layer a bias-free copy (the original's LinearPlaceholder)."""
    count = 0
    for qname, module in list(model.named_modules()):
        for name, child in list(module.named_children()):
            full = f"{qname}.{name}" if qname else name
            if isinstance(child, nn.Linear) and predicate(full, child):
                ref = child
                if bias is False and child.bias is not None:
                    ref = nn.Linear(child.in_features, child.out_features, bias=False,
                                    device=child.weight.device, dtype=child.weight.dtype)
                    with torch.no_grad():
                        ref.weight.copy_(child.weight)
                _set_child(module, name, LinearPlaceholder(ref))
                count += 1
    return count
