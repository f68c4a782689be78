"""Inputs for the report tests, written by the project's real writers.

* a search session on the embedded digits task: the real MCTS search
  (:func:`syno.search.run.run_search` with the ``tiny`` preset, 6 kernels, 2 x 12 training steps
  each) when that API is available, else :class:`syno.search.session.SearchRunner` driving real
  trainings of hand-built operators in the tiny CNN (the session writer, kernel-dir names and
  ``meta.json`` come from the search engineer's code either way);
* ``baseline.json`` from :func:`syno.train.baseline.run_baseline` (tiny on digits, 2 epochs);
* a bench CSV from :func:`syno.bench.core.bench_model` + :func:`syno.bench.report.write_csv`
  (end to end on tiny with the session's kernels, layer-wise and end to end on a CIFAR-size
  ResNet-18 with Operator 1 and the stacked conv; eager, tiny timing budgets);
* LM loss logs from :func:`syno.train.lm.train_lm` (a 2-layer GPT on random tokens, baseline and
  with the QKV projections replaced by an operator);
* when ``syno.post`` provides them: ``reevaluate`` of the 2 best kernels on digits and
  ``quantize_experiment`` (fp32/int8, side-by-side latency) with the best kernel.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

DIGITS_EPOCHS = 2
# Short but real trainings (2 x 12 steps): ~2 s per kernel on one CPU thread, accuracies well above chance.
TRAIN = dict(epochs=DIGITS_EPOCHS, batch_size=32, lr=0.3, max_steps_per_epoch=12, eval_batch_size=360,
             device="cpu", progress=False, seed=0)


# ------------------------------------------------------------------------------------- session
def _hand_built_ops() -> dict[str, Any]:
    from syno.ir.library import HAND_BUILT, conv2d, grouped_conv2d

    # path keys cannot hold "_" (the path separator). Operator 1, the stacked conv, the g=32 grouped
    # conv and the depthwise conv do not fit the tiny CNN's 16/32 channels: they become ERROR dirs.
    ops = {name.replace("_", "-"): f() for name, f in HAND_BUILT.items() if name != "linear"}
    ops["conv7x7"] = conv2d(k="k_2")
    ops["grouped2-conv"] = grouped_conv2d(groups="s")
    return ops


class HandBuiltJob:
    """Evaluates a hand-built operator: fill the tiny CNN's placeholders, train on digits."""

    def setup(self, slot: int) -> None:
        from syno.data import load_dataset

        self.data = load_dataset("digits")
        self.ops = _hand_built_ops()

    def evaluate(self, path: str):
        from syno.codegen.torch import operator_factory
        from syno.models import build_model, fill_placeholders, profile, sample_input
        from syno.search.base import EvalResult
        from syno.train.classifier import train_classifier
        from syno.train.options import VisionTrainOptions

        op = self.ops[path.split(":", 1)[1]]
        torch.manual_seed(0)
        model = build_model("tiny", placeholders=True, mapping_batch=64)
        fill_placeholders(model, operator_factory(op))  # raises for operators that do not fit (-> ERROR dir)
        prof = profile(model, sample_input(model, 1, device="cpu"))
        res = train_classifier(model, self.data, VisionTrainOptions(**TRAIN))
        return EvalResult(status=res.status, accuracy=res.accuracy if res.accuracy is not None else math.nan,
                          loss=res.loss if res.loss is not None else math.inf, flops=prof.macs,
                          params=prof.params, time=res.wall_time_s, message=res.reason)


class HandBuiltProblem:
    """``Problem`` of :mod:`syno.search.problem` over the hand-built operators (path ``Finalize:<name>``)."""

    def __init__(self):
        self.ops = _hand_built_ops()
        self.final_filter = None

    def job(self):
        return HandBuiltJob()

    def identify(self, path: str) -> str:
        return self.ops[path.split(":", 1)[1]].hash

    def artifacts(self, path: str):
        from syno.ir.dot import to_dot
        from syno.ir.looptext import loop_text

        op = self.ops[path.split(":", 1)[1]]
        files = {"operator.json": op.to_json(), "loop.txt": loop_text(op) + "\n", "graph.dot": to_dot(op) + "\n"}
        return files, {"operator": op.to_dict(), "model": "tiny", "dataset": "digits"}


def _list_algorithm(paths: list[str]):
    from syno.search.base import SearchAlgorithm
    from syno.synth.protocol import path_from_str, path_to_str

    class ListAlgorithm(SearchAlgorithm):
        name = "list"

        def __init__(self):
            self.todo = list(paths)
            self.done: dict[str, Any] = {}
            self._pending: list[str] = []

        def propose(self, k: int = 1):
            out = []
            while self.todo and len(out) < k:
                p = self.todo.pop(0)
                self._pending.append(p)
                out.append(path_from_str(p))
            return out

        def report(self, path, result):
            p = path if isinstance(path, str) else path_to_str(path)
            self.done[p] = result
            if p in self._pending:
                self._pending.remove(p)
            return None

        def forget(self, path):
            pass

        @property
        def exhausted(self):
            return not self.todo

        @property
        def pending(self):
            return [path_from_str(p) for p in self._pending]

        def state_dict(self):
            return {"todo": self.todo, "done": sorted(self.done)}

        def load_state_dict(self, state):
            self.todo = list(state["todo"])

        def is_evaluated(self, path):
            return (path if isinstance(path, str) else path_to_str(path)) in self.done

    return ListAlgorithm()


SEARCH_OVERRIDES = {"run.max_evaluations": 6, "run.workers": 0, "train.epochs": DIGITS_EPOCHS,
                    "train.max_steps_per_epoch": 12, "train.lr": 0.3, "train.eval_batch_size": 360}


def _real_search(root: Path) -> bool:
    """The search engineer's digits search (MCTS, ``syno.search.run.run_search``) with a tiny budget.
    Returns False when that API is not there; a failing search falls back with a warning (its own
    tests are in tests/search)."""
    try:
        from syno.search.options import build_options
        from syno.search.run import run_search
    except ImportError:
        return False
    try:
        run_search(build_options("tiny", {**SEARCH_OVERRIDES, "session_dir": str(root)}))
    except Exception as exc:  # noqa: BLE001
        import shutil
        import warnings

        warnings.warn(f"real digits search failed ({type(exc).__name__}: {exc}); using the hand-built fallback")
        shutil.rmtree(root, ignore_errors=True)
        return False
    return True


def build_session(root: Path) -> Path:
    """A session of the digits search; ``root/.fixture`` says which way it was made ("search" or
    "hand-built")."""
    root = Path(root)
    if _real_search(root):
        (root / ".fixture").write_text("search\n")
        return root
    from syno.search.base import RewardConfig
    from syno.search.evaluator import InlineEvaluator
    from syno.search.session import SearchRunner, SessionStore

    problem = HandBuiltProblem()
    names = list(problem.ops)
    store = SessionStore(root)
    store.create({"options": {"model": "tiny", "dataset": "digits", "target": "accuracy", "algorithm": "list",
                              "epochs": DIGITS_EPOCHS}})
    runner = SearchRunner(store, problem, _list_algorithm([f"Finalize:{n}" for n in names]),
                          InlineEvaluator(problem.job()), RewardConfig(power=1.0), info={"model": "tiny"})
    runner.run(max_evaluations=len(names))
    (root / ".fixture").write_text("hand-built\n")
    return root


# ------------------------------------------------------------------------------------ baseline
def build_baseline(out: Path) -> Path:
    from syno.train.baseline import run_baseline
    from syno.train.options import VisionTrainOptions

    run_baseline("tiny", "digits", out, VisionTrainOptions(**TRAIN))
    return Path(out) / "baseline.json"


# --------------------------------------------------------------------------------------- bench
def build_bench(session: Path, out_csv: Path) -> Path:
    from syno.bench.core import BenchOptions, bench_model
    from syno.bench.operators import find_kernels, resolve_operator
    from syno.bench.report import write_csv
    from syno.bench.timing import TimingOptions

    timing = TimingOptions(warmup_ms=2, budget_ms=10, min_repeat=3, max_repeat=50)
    kernels = [resolve_operator(kernel_dir=d, impl="codegen") for d in find_kernels(session, 3)]
    tiny = BenchOptions(device="cpu", batches=(1,), backends=("eager",), timing=timing, threads=1, log=None)
    rows = bench_model("tiny", kernels, tiny)
    # Operator 1 twice, labelled as benchmarks/end_to_end.py does for a second implementation.
    specs = [resolve_operator("operator1", impl="manual"), resolve_operator("operator1", impl="codegen"),
             resolve_operator("stacked_conv", impl="manual")]
    specs[1].label = "operator1[codegen]"
    r18 = BenchOptions(device="cpu", batches=(1,), backends=("eager",), image_size=32, num_classes=10,
                       timing=timing, layers=True, threads=1, log=None)
    rows += bench_model("resnet18", specs, r18)
    return write_csv(rows, out_csv)


# ------------------------------------------------------------------------------------ post
POST_OVERRIDES = {"epochs": DIGITS_EPOCHS, "max_steps_per_epoch": 12, "batch_size": 32, "lr": 0.3, "device": "cpu",
                  "progress": False}


def build_reeval(session: Path, out: Path) -> Path | None:
    """``syno.post.reevaluate`` of the session's 2 best kernels on digits (2 x 12 steps, as the baseline), results under
    ``out`` (per-kernel reeval.json + reeval-digits.json summary); None when post has no reevaluate."""
    try:
        from syno.post.reevaluate import reevaluate
    except ImportError:
        return None
    reevaluate("digits", session=session, top=2, out=out, overrides=POST_OVERRIDES)
    return Path(out)


def build_quantize(session: Path, out: Path) -> Path | None:
    """``syno.post.quantize.quantize_experiment`` of the tiny CNN with the session's best kernel."""
    try:
        from syno.post.quantize import quantize_experiment
    except ImportError:
        return None
    from syno.report import collect

    best = collect([session]).sessions[0].ranked()[0]
    quantize_experiment("tiny", "digits", out, kernel_dir=best.dir, overrides=POST_OVERRIDES, latency_rounds=10,
                        threads=1)
    return Path(out) / "quantize.json"


# ------------------------------------------------------------------------------------ LM logs
def build_lm_logs(out: Path, steps: int = 60) -> list[Path]:
    """metrics.jsonl of a baseline GPT and of one with its QKV projections replaced by ``linear``."""
    from syno.codegen.torch import operator_factory
    from syno.data.text import TokenData
    from syno.ir.library import linear
    from syno.models import build_model, fill_placeholders
    from syno.train.lm import train_lm
    from syno.train.options import LMTrainOptions

    g = torch.Generator().manual_seed(0)
    # A learnable stream: a noisy repeating pattern over 64 tokens.
    base = torch.arange(4096) % 17
    noise = torch.randint(0, 64, (4096,), generator=g)
    tokens = torch.where(torch.rand(4096, generator=g) < 0.2, noise, base)
    data = TokenData.from_tensor(tokens, vocab_size=64)
    cfg = dict(vocab_size=64, seq_len=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    paths = []
    for name, placeholders in (("baseline", False), ("kernel_linear", True)):
        torch.manual_seed(0)
        model = build_model("gpt2", placeholders=placeholders, **cfg)
        if placeholders:
            fill_placeholders(model, operator_factory(linear()))
        log = Path(out) / name / "metrics.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        train_lm(model, data, LMTrainOptions(max_iters=steps, batch_size=8, seq_len=32, lr=3e-3, log_every_steps=1,
                                             device="cpu", progress=False, eval_batches=0, log_path=str(log)))
        paths.append(log)
    return paths


def build_all(root: Path) -> dict[str, Path]:
    t0 = time.perf_counter()
    session = build_session(root / "tiny-session")
    baseline = build_baseline(root / "baseline")
    bench = build_bench(session, root / "bench" / "bench.csv")
    logs = build_lm_logs(root / "lm")
    reeval = build_reeval(session, root / "reeval")
    quant = build_quantize(session, root / "quantize")
    return {"session": session, "baseline": baseline, "bench": bench, "lm": root / "lm", "lm_logs": logs[0],
            "reeval": reeval, "quantize": quant, "seconds": time.perf_counter() - t0}
