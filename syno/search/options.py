"""One typed options object for a search, from the CLI down to the sampler and the trainer.

:class:`SearchOptions` nests the synthesis space (:class:`~syno.synth.options.SynthOptions`), the
proxy trainer (:class:`~syno.train.options.VisionTrainOptions` / ``LMTrainOptions``), the reward,
the algorithm constants and the run limits. :func:`build_options` starts from a per-model preset
(the original's ``search.sh`` knobs, reference §5.1), applies ``key=value`` overrides with dotted
keys (``train.epochs=1``, ``synth.depth=10``, ``reward.acc_lower=0.3``), fills the synthesis
mappings from the model's placeholders and turns the model-level FLOPs-ratio window into the
space's absolute FLOPs window. The result is stored in ``session.json`` and rebuilt, unchanged, by
every evaluation worker.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .base import RewardConfig
from .fidelity import FidelityOptions
from .latency import LatencyOptions
from .mcts import MCTSConfig
from .objective import ObjectiveOptions
from .random_search import RandomSearchConfig

__all__ = ["SearchOptions", "RunOptions", "build_options", "apply_overrides", "parse_value", "PRESETS",
           "MODEL_CHOICES", "RUN_FIELDS"]


class RunOptions(BaseModel):
    """How a run is executed; unlike the rest, these may change when a session is resumed."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, ge=0, description="evaluation processes (0: evaluate inline in this process)")
    kernel_timeout: float | None = Field(None, gt=0, description="seconds before a kernel's worker is killed")
    max_evaluations: int | None = Field(None, ge=1, description="stop when the session holds this many kernels")
    budget_seconds: float | None = Field(None, gt=0, description="wall-clock budget of this run")
    drain_seconds: float | None = Field(None, ge=0,
                                        description="after the budget, wait this long for running kernels (None: all)")
    checkpoint_interval: float = Field(30.0, ge=0, description="seconds between checkpoints")
    threads: int | None = Field(None, ge=1, description="torch threads per worker (default: cores / workers)")


RUN_FIELDS = frozenset(RunOptions.model_fields)


class SearchOptions(BaseModel):
    """Everything a search needs; see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="zoo model (syno.models) or a registered problem "
                                   "(syno.search.problem.register_problem)")
    dataset: str = Field(description="digits | cifar100 | imagenet | lm1b (a registered problem: its own name)")
    data_dir: str | None = None
    image_size: int | None = Field(None, description="resize images to this size (None: the dataset's own)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    session_dir: str | None = Field(None, description="default: results/<model>-session")
    algorithm: Literal["mcts", "random"] = "mcts"
    implementation: str = Field("auto", description="codegen implementation of the kernels: auto (CUDA: "
                                "autotuned; CPU: fast:min where it matches einsum on a probe, else einsum), "
                                "einsum, fast:min, ...")
    reward: RewardConfig = Field(default_factory=RewardConfig)
    objective: ObjectiveOptions = Field(default_factory=ObjectiveOptions,
                                        description="accuracy or speed (syno.search.objective)")
    latency: LatencyOptions = Field(default_factory=LatencyOptions,
                                    description="how every kernel is timed before training (syno.search.latency)")
    flops_ratio: tuple[float, float] | None = Field(
        None, description="(min, max) MACs of the whole model with the kernel, relative to the original model")
    fidelity: FidelityOptions = Field(default_factory=FidelityOptions,
                                      description="multi-fidelity rungs with ASHA promotion (syno.search.fidelity)")
    mcts: MCTSConfig = Field(default_factory=MCTSConfig)
    random: RandomSearchConfig = Field(default_factory=RandomSearchConfig)
    synth: Any = Field(None, description="SynthOptions of the space (None only for a registered problem)")
    train: Any = Field(None, description="VisionTrainOptions or LMTrainOptions (None only for a registered problem)")
    problem: dict[str, Any] | None = Field(None, description="settings of a registered problem (None for a zoo "
                                           "model; syno.search.problem.ProblemType)")
    run: RunOptions = Field(default_factory=RunOptions)
    reference: dict[str, Any] = Field(default_factory=dict,
                                      description="derived: MACs/params of the original model (filled by build_options)")

    @field_validator("flops_ratio")
    @classmethod
    def _ratio(cls, v):
        if v is not None and not (0 <= v[0] < v[1]):
            raise ValueError(f"flops_ratio: need 0 <= min < max, got {v}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data):
        # session.json files written before the synthetic test space left the package carry
        # "mock" (null for a zoo model, a registered problem's settings otherwise)
        if isinstance(data, dict) and "mock" in data:
            data = dict(data)
            legacy = data.pop("mock")
            if legacy is not None and data.get("problem") is None:
                data["problem"] = legacy
        return data

    @model_validator(mode="after")
    def _typed_parts(self) -> SearchOptions:
        if self.problem is not None:  # a registered problem: no space options, no trainer
            return self
        from syno.synth.options import SynthOptions
        from syno.train.options import LMTrainOptions, VisionTrainOptions

        if self.synth is None:
            raise ValueError("synth: the synthesis options are required (build them with build_options)")
        if not isinstance(self.synth, SynthOptions):
            self.synth = SynthOptions.model_validate(self.synth)
        train_cls = LMTrainOptions if self.dataset == "lm1b" else VisionTrainOptions
        if self.train is None:
            self.train = train_cls()
        elif not isinstance(self.train, train_cls):
            data = self.train.model_dump() if isinstance(self.train, BaseModel) else self.train
            self.train = train_cls.model_validate(data)
        return self

    @property
    def directory(self) -> str:
        return self.session_dir or f"results/{self.model}-session"

    def to_json_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def space_digest(self) -> dict[str, Any]:
        """The parts that must not change when a session is resumed."""
        d = self.to_json_dict()
        d.pop("run")
        d.pop("session_dir")
        return d


# ----------------------------------------------------------------------------------------------
# presets (reference §5.1; search.sh per model). Synthesis knobs are overrides of the synth presets.

_VISION_TRAIN = {"epochs": 100, "epoch_time_limit_s": 60.0, "progress": False}
_COMMON_MCTS: dict[str, Any] = {}

PRESETS: dict[str, dict[str, Any]] = {
    "resnet18": {
        "dataset": "cifar100", "image_size": 224,
        "reward": {"acc_lower": 0.4, "acc_upper": 0.7, "power": 4},
        "flops_ratio": (0.15, 0.9),
        "synth_preset": "resnet18", "synth": {},
        "train": dict(_VISION_TRAIN),
    },
    "resnet34": {
        "dataset": "cifar100", "image_size": 224,
        "reward": {"acc_lower": 0.4, "acc_upper": 0.7, "power": 4},
        "flops_ratio": (0.15, 0.9),
        "synth_preset": "resnet18", "synth": {},
        "train": dict(_VISION_TRAIN),
    },
    "resnext29_2x64d": {
        "dataset": "cifar100", "image_size": 224,
        "reward": {"acc_lower": 0.2, "acc_upper": 0.7, "power": 4},
        "flops_ratio": (0.15, 0.95),
        "synth_preset": "resnet18", "synth": {"max_merges": 2, "max_expansion_merge_multiplier": 4096},
        "train": dict(_VISION_TRAIN),
    },
    "efficientnet_v2_s": {
        "dataset": "cifar100", "image_size": 224,
        "reward": {"acc_lower": 0.3, "acc_upper": 0.7, "power": 4},
        "flops_ratio": (0.5, 0.9),
        "synth_preset": "resnet18",
        "synth": {"max_expansion_merge_multiplier": 6144, "max_weight_share_dim": 24},
        "train": dict(_VISION_TRAIN),
    },
    "densenet121": {
        "dataset": "cifar100", "image_size": 224,
        "reward": {"acc_lower": 0.3, "acc_upper": 0.7, "power": 4},
        "flops_ratio": (0.15, 1.0),
        "synth_preset": "resnet18", "synth": {"max_expansion_merge_multiplier": 5120},
        "train": dict(_VISION_TRAIN),
    },
    "gpt2": {
        "dataset": "lm1b",
        "reward": {"target": "loss", "max_loss": 6.9, "power": 4},
        "flops_ratio": (0.1, 1.2),
        "synth_preset": "gpt2",
        "synth": {"max_merges": 2, "max_splits": 2, "depth": 7, "max_chain_length": 5,
                  "max_expansion_merge_multiplier": 6144, "max_expansion_repeat_multiplier": 5,
                  "allow_tile": True, "min_single_weight_params": 100000},
        "model_kwargs": {"seq_len": 2048},
        "train": {"time_budget_s": 1800.0, "max_loss": 6.9, "progress": False},
    },
    # The embedded default: the tiny CNN on scikit-learn's digits, a few seconds per kernel on a CPU.
    "tiny": {
        "dataset": "digits",
        "reward": {"acc_lower": 0.3, "acc_upper": 1.0, "power": 2},
        "flops_ratio": (0.05, 1.5),
        "synth_preset": "tiny", "synth": {},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.2, "weight_decay": 5e-4, "device": "cpu",
                  "progress": False, "time_budget_s": 120.0},
        # rungs (syno.search.fidelity): every kernel 5 epochs of its own schedule, the best eighth (ASHA) the
        # 15-epoch recipe (the digits reevaluation) from scratch. Against 15 epochs, over 145 kernels, a run of
        # its own schedule ranks kernels at Spearman 0.928 (3 epochs), 0.937 (4), 0.951 (5); 1 epoch (39 kernels)
        # (train.epochs, used with fidelity.enabled=false) at 0.76. An eighth rather than a quarter keeps 30+
        # kernels in a 4-minute demo on a busy core, at the same ranking quality in an ASHA simulation
        # (benchmarks/README.md "Proxy fidelity")
        "fidelity": {"enabled": True, "rungs": [5, 15], "reduction": 8, "schedule": "fresh"},
        "run": {"kernel_timeout": 300.0, "checkpoint_interval": 10.0},
    },
}
MODEL_CHOICES = tuple(PRESETS)


# ----------------------------------------------------------------------------------------------
# overrides

def parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, true/false/null, lists, objects), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.strip().lower()
        if low in ("none", "null"):
            return None
        if low in ("true", "false"):
            return low == "true"
        return text


def apply_overrides(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``train.epochs``) in a nested dict (in place; also returned)."""
    for key, value in overrides.items():
        parts = key.split(".")
        node = base
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ValueError(f"--set {key}: {p!r} is not a group of options")
            node = nxt
        node[parts[-1]] = value
    return base


def _split_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    synth, rest = {}, {}
    for k, v in overrides.items():
        (synth if k.startswith("synth.") else rest)[k] = v
    return {k[len("synth."):]: v for k, v in synth.items()}, rest


def _dataset_shape(opts: dict[str, Any]) -> dict[str, Any]:
    """num_classes / image_size / in_channels of the dataset, without loading it."""
    ds, size = opts["dataset"], opts.get("image_size")
    if ds == "digits":
        return {"num_classes": 10, "image_size": size or 16, "in_channels": 1}
    if ds == "cifar100":
        return {"num_classes": 100, "image_size": size or 32, "in_channels": 3}
    if ds == "imagenet":
        return {"num_classes": 1000, "image_size": size or 224, "in_channels": 3}
    raise ValueError(f"dataset {ds!r} is not an image dataset")


def reference_model(opts: SearchOptions | Mapping[str, Any], *, placeholders: bool = True):
    """The zoo model of a search (mappings recorded with N = 1 on the meta device)."""
    from syno.models import build_model

    o = opts.model_dump() if isinstance(opts, BaseModel) else dict(opts)
    kwargs = dict(o.get("model_kwargs") or {})
    if o["model"] == "gpt2":
        return build_model("gpt2", placeholders=placeholders, mapping_batch=1, **kwargs)
    shape = _dataset_shape(o)
    return build_model(o["model"], num_classes=shape["num_classes"], image_size=shape["image_size"],
                       in_channels=shape["in_channels"], placeholders=placeholders, mapping_batch=1, **kwargs)


def _space_mappings(synth: dict[str, Any], mappings: list[dict[str, int]]) -> list[dict[str, int]]:
    """The placeholders' mappings restricted to the space's variables. A space may derive a recorded
    size (the original's GPT-2 space has output ``t*H_in``, no ``H_out``): the derived output size
    must then equal the recorded one, else the space does not describe this model."""
    from syno.ir.sizes import SizeSpace

    space = SizeSpace.from_specs(synth["primary_specs"], synth["coefficient_specs"])
    declared = {v.name for v in space.variables}
    out = []
    for i, m in enumerate(mappings):
        kept = {k: v for k, v in m.items() if k in declared}
        if "H_out" in m and "H_out" not in declared:
            got = space.bind(kept).int(space.shape(synth["output_shape"]).sizes[-1])  # coefficients: their values
            if got != m["H_out"]:
                raise ValueError(f"placeholder {i} maps to H_out = {m['H_out']} but the space's output "
                                 f"{synth['output_shape']} is {got} there")
        out.append(kept)
    return out


def build_options(model: str, overrides: Mapping[str, Any] | None = None) -> SearchOptions:
    """The preset of ``model`` (a zoo model's, or a registered problem's) with dotted ``overrides``
    applied; see the module docstring."""
    from .problem import problem_type

    kind = problem_type(model)
    if model not in PRESETS and kind is None:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODEL_CHOICES)}")
    preset = json.loads(json.dumps(kind.preset if kind is not None else PRESETS[model]))  # deep copy
    synth_over, rest = _split_overrides(dict(overrides or {}))
    synth_preset = preset.pop("synth_preset", None)
    synth_base = preset.pop("synth", None)
    base: dict[str, Any] = {"model": model, **preset}
    apply_overrides(base, rest)
    if kind is not None:
        return SearchOptions.model_validate(base)
    if base.get("problem") is not None:
        raise ValueError(f"problem: {model!r} is a zoo model, not a registered problem with its own settings")

    from syno.models import profile, sample_input
    from syno.models.placeholder import model_mappings
    from syno.synth.options import SynthOptions

    # mappings and reference MACs from the model actually trained
    model_obj = reference_model(base)
    mappings = [dict(m) for m in model_mappings(model_obj)]
    if not mappings:
        raise ValueError(f"model {model!r} has no placeholder to fill at this size")
    prof = profile(model_obj, sample_input(model_obj, 1, device="meta"))
    base["reference"] = {"macs": prof.macs, "params": prof.params, "non_placeholder_macs": prof.non_placeholder_macs,
                         "placeholders": len(mappings)}

    synth = getattr(SynthOptions, synth_preset)().model_dump()
    synth.update(synth_base or {})
    synth["mappings"] = _space_mappings(synth, mappings)
    ratio = base.get("flops_ratio")
    if ratio is not None and "flops_ratio" not in synth_over:
        # the model-level window (reference §1.5) as the space's absolute window on the placeholders' MACs
        lo_model, hi_model = ratio[0] * prof.macs, ratio[1] * prof.macs
        raw = prof.non_placeholder_macs
        if hi_model <= raw:
            raise ValueError(f"flops_ratio: max {ratio[1]} x {prof.macs} MACs leaves nothing for the kernels "
                             f"(the rest of the model alone has {raw})")
        synth.update(flops_ratio=None, reference_operator=None,
                     min_flops=max(0.0, lo_model - raw), max_flops=hi_model - raw)
    synth.update(synth_over)
    base["synth"] = synth
    return SearchOptions.model_validate(base)
