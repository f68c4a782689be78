"""Inputs for the report tests, written by the project's real writers.

* a search session on the embedded digits task: the real MCTS search
  (:func:`syno.search.run.run_search` with the ``tiny`` preset, 6 kernels, 2 x 12 training steps
  each);
* ``baseline.json`` from :func:`syno.train.baseline.run_baseline` (tiny on digits, 2 epochs);
* a bench CSV from :func:`syno.bench.core.bench_model` + :func:`syno.bench.report.write_csv`
  (end to end on tiny with the session's kernels, layer-wise and end to end on a CIFAR-size
  ResNet-18 with Operator 1 and the stacked conv; eager, tiny timing budgets);
* LM loss logs from :func:`syno.train.lm.train_lm` (a 2-layer GPT on random tokens, baseline and
  with the QKV projections replaced by an operator);
* ``reevaluate`` of the 2 best kernels on digits and ``quantize_experiment`` (fp32/int8,
  side-by-side latency) with the best kernel.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

DIGITS_EPOCHS = 2
# Short but real trainings (2 x 12 steps): ~2 s per kernel on one CPU thread, accuracies well above chance.
TRAIN = dict(epochs=DIGITS_EPOCHS, batch_size=32, lr=0.3, max_steps_per_epoch=12, eval_batch_size=360,
             device="cpu", progress=False, seed=0)


# ------------------------------------------------------------------------------------- session
SEARCH_OVERRIDES = {"run.max_evaluations": 6, "run.workers": 0, "train.epochs": DIGITS_EPOCHS,
                    "train.max_steps_per_epoch": 12, "train.lr": 0.3, "train.eval_batch_size": 360}


def build_session(root: Path) -> Path:
    """A session of the real digits search (MCTS, :func:`syno.search.run.run_search`) with a tiny budget."""
    from syno.search.options import build_options
    from syno.search.run import run_search

    root = Path(root)
    run_search(build_options("tiny", {**SEARCH_OVERRIDES, "session_dir": str(root)}))
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


def build_reeval(session: Path, out: Path) -> Path:
    """``syno.post.reevaluate`` of the session's 2 best kernels on digits (2 x 12 steps, as the baseline), results under
    ``out`` (per-kernel reeval.json + reeval-digits.json summary)."""
    from syno.post.reevaluate import reevaluate

    reevaluate("digits", session=session, top=2, out=out, overrides=POST_OVERRIDES)
    return Path(out)


def build_quantize(session: Path, out: Path) -> Path:
    """``syno.post.quantize.quantize_experiment`` of the tiny CNN with the session's best kernel."""
    from syno.post.quantize import quantize_experiment

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
