"""A search *problem*: the synthesis space plus how to evaluate, identify and describe its kernels.

The session runner needs, besides a :class:`~syno.synth.protocol.SearchSpace`:

* ``job()``: a picklable recipe the evaluator workers use to rebuild everything and evaluate a path;
* ``identify(path) -> str``: the kernel's stable hash (the operator hash), used for directory names
  and deduplication;
* ``artifacts(path) -> (files, meta)``: the files of a kernel directory and extra ``meta.json`` keys;
* ``final_filter``: rejects finals before evaluation (the FLOPs-ratio filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from syno.synth.protocol import SearchSpace, path_from_str

from .base import EvalResult, FinalFilter
from .evaluator import Job

__all__ = ["SearchProblem", "KernelProblem", "KernelJob", "FlopsRatioFilter", "evaluate_operator",
           "kernel_macs", "make_problem", "ProblemType", "register_problem", "problem_type"]


class SearchProblem(Protocol):
    """What the session runner needs of a problem (see the module docstring); not
    :class:`syno.synth.options.Problem`, the compiled synthesis options."""

    space: SearchSpace
    final_filter: FinalFilter | None

    def job(self) -> Job: ...

    def check(self) -> None:
        """Raise ``ValueError`` naming what is wrong if the evaluation cannot work at all (e.g. no data)."""

    def identify(self, path: str) -> str: ...

    def artifacts(self, path: str) -> tuple[dict[str, str], dict[str, Any]]: ...


# ----------------------------------------------------------------------------------------------
# the real problem: synthesized operators trained in a zoo model

def _load_data(options):
    """The proxy dataset of a search (the pipeline's keyword rules, as ``syno baseline``)."""
    from syno.train.pipeline import load_task_data

    return load_task_data(options.dataset, options.data_dir, options.image_size, **options.dataset_kwargs)


def _distinct_mappings(mappings) -> list[tuple[dict, int]]:
    rows: dict[tuple, int] = {}
    for m in mappings:
        key = tuple(sorted(m.items()))
        rows[key] = rows.get(key, 0) + 1
    return [(dict(k), r) for k, r in rows.items()]


def kernel_macs(op, mappings) -> float:
    """MACs per sample of ``op`` filled into every placeholder (the plan codegen executes)."""
    total = 0.0
    for m, repeats in _distinct_mappings(mappings):
        (f,) = op.flops(op.bind(m))
        total += repeats * f / max(1, int(m.get("N", 1)))
    return total


class FlopsRatioFilter:
    """Reject finals whose model (kernels filled in) has MACs outside ``ratio`` x the original's
    (reference §1.5): ``min(r_min F, F_raw) <= F_raw + sum(kernel MACs) <= r_max F``."""

    def __init__(self, ratio: tuple[float, float], reference_macs: float, non_placeholder_macs: float, mappings):
        self.lo = max(ratio[0] * reference_macs, non_placeholder_macs)
        self.hi = ratio[1] * reference_macs
        self.ratio = ratio
        self.reference = reference_macs
        self.raw = non_placeholder_macs
        self.mappings = list(mappings)
        self._cache: dict[str, str | None] = {}

    def __call__(self, node) -> str | None:
        got = self._cache.get(node.key, "?")
        if got != "?":
            return got
        try:
            total = self.raw + kernel_macs(node.operator(), self.mappings)
        except Exception as exc:  # noqa: BLE001 - a final whose FLOPs cannot be planned is not evaluated
            reason = f"cannot count MACs: {type(exc).__name__}: {exc}"
        else:
            reason = None
            if not (self.lo <= total <= self.hi):
                reason = (f"model MACs {total:.4g} = {total / self.reference:.3f} x original, outside "
                          f"[{self.ratio[0]}, {self.ratio[1]}]")
        self._cache[node.key] = reason
        return reason


def evaluate_operator(options, op, data, train_options, checkpoint=None) -> EvalResult:
    """Train the search's model with ``op`` in every placeholder; returns the proxy result (with the
    learning curve in ``extra['curve']``). ``checkpoint``: a training-state file to continue from and
    to save to (a rung of :mod:`syno.search.fidelity`)."""
    from syno.codegen.torch import operator_factory
    from syno.train.pipeline import build_task_model, train_task_model

    device = str(train_options.device)
    impl = options.implementation
    if impl == "auto" and not device.startswith("cuda"):
        impl = cpu_implementation(op, options.synth.mappings)
    # same initial weights outside the kernels for every kernel (seeded inside)
    model, modules = build_task_model(options.model, data, op, seed=train_options.seed,
                                      model_kwargs=options.model_kwargs,
                                      factory=lambda o: operator_factory(o, implementation=impl))
    ref = options.reference
    macs = float(ref.get("non_placeholder_macs", 0)) + sum(
        float(m.plan.flops) / max(1, int(m.mapping.get("N", 1))) for m in modules)
    params = sum(p.numel() for p in model.parameters())
    tr = train_task_model(model, data, train_options, checkpoint=checkpoint)
    status, message = tr.status, tr.reason
    acc = tr.accuracy if tr.accuracy is not None else math.nan
    loss = tr.loss if tr.loss is not None else math.inf
    if status == "timeout":
        # the original stopped slow kernels after an epoch and kept their best accuracy (reference §2.2)
        status = "pruned" if tr.accuracy is not None or options.dataset == "lm1b" and tr.loss is not None else "timeout"
    return EvalResult(status=status, accuracy=acc, loss=loss, flops=int(round(macs)), params=int(params),
                      time=tr.wall_time_s, message=message,
                      extra={"epochs": tr.epochs, "steps": tr.steps, "final_accuracy": tr.final_accuracy,
                             "curve": tr.history})


def cpu_implementation(op, mappings) -> str:
    """``"fast:min"`` (conv/linear stages through torch's kernels; several times faster than einsum on a
    CPU) when it agrees with the reference einsum implementation on a probe input for every distinct
    mapping (forward and weight gradients), else ``"einsum"``."""
    import torch

    from syno.codegen.torch import build_module

    try:
        for m, _ in _distinct_mappings(mappings):
            probe = dict(m, N=2) if "N" in m else dict(m)
            fast = build_module(op, probe, implementation="fast:min")
            ref = build_module(op, probe, implementation="einsum")
            ref.load_state_dict(fast.state_dict())
            bound = op.bind(probe)
            shape = [int(bound.ints(size)[0]) for size in op.input_shape.sizes]
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
            yf, yr = fast(x), ref(x)
            if yf.shape != yr.shape or not torch.allclose(yf, yr, rtol=1e-4, atol=1e-5):
                return "einsum"
            yf.square().sum().backward()
            yr.square().sum().backward()
            for a, b in zip(fast.weights, ref.weights):
                if not torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-4):
                    return "einsum"
    except Exception:  # noqa: BLE001 - no fast path for this operator
        return "einsum"
    return "fast:min"


class KernelJob:
    """Evaluation recipe for :class:`~syno.search.evaluator.LocalPoolEvaluator` workers: rebuilds the
    synthesis space and the dataset from the options, then trains one kernel per call. The operator
    comes from replaying its path in the space (never from importing generated code)."""

    def __init__(self, options):
        self.options = options

    def setup(self, slot: int) -> None:
        import torch

        from syno.synth.space import SynthSpace

        o = self.options
        device = o.train.device
        if device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{slot % torch.cuda.device_count()}"
        elif device == "auto":
            device = "cpu"
        self.train_options = o.train.model_copy(update={"device": device, "progress": False})
        self.space = SynthSpace(o.synth)
        self.data = _load_data(o)
        from .latency import KernelTimer  # every kernel is timed on this worker's device before training

        self.timer = KernelTimer(o, device, session_dir=o.directory) if o.latency.enabled else None

    def evaluate(self, path: str) -> EvalResult:
        from .fidelity import split_task
        from .latency import evaluate_with_latency

        path, rung = split_task(path)  # "<path>@<k>": rung k of a multi-fidelity search (syno.search.fidelity)
        node = self.space.node_from_path(path_from_str(path))
        if not node.is_final:
            raise ValueError(f"path {path!r} does not reach a final node")
        op = node.operator()
        fid = getattr(self.options, "fidelity", None)
        if fid is None or not fid.enabled:
            return evaluate_with_latency(getattr(self, "timer", None), self.options.objective, op,
                                         lambda: evaluate_operator(self.options, op, self.data, self.train_options))
        from .fidelity import rung_checkpoint, rung_checkpoint_done, rung_train_options

        fid = fid.with_milestones(getattr(self.train_options, "prune_milestones", None) or {})
        train = rung_train_options(self.train_options, fid, rung)
        ckpt = rung_checkpoint(self.options.directory, op.hash, fid, rung)
        if rung == 0:
            ckpt.unlink(missing_ok=True)  # a kernel evaluated again (after a kill) starts from scratch
        res = evaluate_with_latency(getattr(self, "timer", None) if rung == 0 else None, self.options.objective, op,
                                    lambda: evaluate_operator(self.options, op, self.data, train, checkpoint=ckpt))
        res.extra = {**(res.extra or {}), "rung": rung, "budget": fid.rungs[rung], "unit": fid.unit}
        rung_checkpoint_done(self.options.directory, op.hash, fid, rung, res.ok)
        return res


class KernelProblem:
    """The search problem of :class:`~syno.search.options.SearchOptions` for a zoo model."""

    def __init__(self, options):
        from syno.synth.space import SynthSpace

        self.options = options
        self.space = SynthSpace(options.synth)
        ref = options.reference
        self.final_filter = None
        if options.flops_ratio is not None and ref.get("macs"):
            self.final_filter = FlopsRatioFilter(options.flops_ratio, float(ref["macs"]),
                                                 float(ref["non_placeholder_macs"]), options.synth.mappings)
        self._ops: dict[str, Any] = {}

    def job(self) -> KernelJob:
        return KernelJob(self.options)

    def check(self) -> None:
        """Load the dataset once here, so a missing or damaged one fails before the session exists
        (and not in every worker)."""
        try:
            _load_data(self.options)
        except (OSError, ValueError) as exc:  # DatasetNotFoundError is an OSError
            raise ValueError(f"dataset {self.options.dataset!r}: {exc}") from None

    def operator(self, path: str):
        op = self._ops.get(path)
        if op is None:
            op = self._ops[path] = self.space.node_from_path(path_from_str(path)).operator()
        return op

    def identify(self, path: str) -> str:
        return self.operator(path).hash

    def artifacts(self, path: str) -> tuple[dict[str, str], dict[str, Any]]:
        op = self.operator(path)
        files: dict[str, str] = {"operator.json": op.to_json(indent=1) + "\n"}
        errors = {}
        try:
            from syno.ir.looptext import loop_text

            files["loop.txt"] = loop_text(op)
        except Exception as exc:  # noqa: BLE001 - best effort
            errors["loop.txt"] = f"{type(exc).__name__}: {exc}"
        try:
            from syno.ir.dot import to_dot

            files["graph.dot"] = to_dot(op)
        except Exception as exc:  # noqa: BLE001
            errors["graph.dot"] = f"{type(exc).__name__}: {exc}"
        mappings = _distinct_mappings(self.options.synth.mappings)
        try:
            from syno.codegen.export import module_source

            for j, (m, _) in enumerate(mappings):
                files[f"kernel_{j}.py"] = module_source(op, m)
        except Exception as exc:  # noqa: BLE001
            errors["kernel.py"] = f"{type(exc).__name__}: {exc}"
        meta = {"operator": op.to_dict(), "operator_hash": op.hash,
                "mappings": [m for m, _ in mappings], "model": self.options.model}
        if errors:
            meta["artifact_errors"] = errors
        return files, meta


# ----------------------------------------------------------------------------------------------
# problems other than a zoo model's, by name

@dataclass(frozen=True)
class ProblemType:
    """A search problem other than a zoo model's kernel search, chosen by ``options.model``.

    ``build(settings)`` makes the :class:`SearchProblem` from ``options.problem`` (the problem's own
    settings, ``--set problem.KEY=VALUE``); ``preset`` is its options preset, as
    :data:`syno.search.options.PRESETS` (it must hold ``problem``, a dict). Such a problem has no
    synthesis options, no trainer and no latency: it trains nothing (the tests' synthetic space,
    ``tests/search/synthetic.py``)."""

    name: str
    build: Callable[[dict[str, Any]], SearchProblem]
    preset: dict[str, Any]


_PROBLEM_TYPES: dict[str, ProblemType] = {}


def register_problem(kind: ProblemType) -> None:
    """Make ``kind`` the problem of ``syno search NAME`` in this process (registering a name again
    replaces it). Evaluation workers need nothing registered: they receive the problem's job."""
    if not isinstance(kind.preset.get("problem"), dict):
        raise ValueError(f"problem {kind.name!r}: its preset needs a 'problem' settings dict")
    _PROBLEM_TYPES[kind.name] = kind


def problem_type(name: str) -> ProblemType | None:
    """The registered problem named ``name``, or None (then ``name`` is a zoo model)."""
    return _PROBLEM_TYPES.get(name)


def make_problem(options) -> SearchProblem:
    if options.problem is not None:
        kind = problem_type(options.model)
        if kind is None:
            raise ValueError(f"no search problem named {options.model!r} is registered in this process "
                             f"(syno.search.problem.register_problem)")
        return kind.build(dict(options.problem))
    return KernelProblem(options)
