"""syno.train: proxy trainers (image classifiers, language models), metrics files, baselines."""

from .classifier import evaluate_classifier, train_classifier
from .lm import evaluate_lm, tail_mean, train_lm
from .metrics import append_jsonl, read_jsonl, write_json
from .options import LMTrainOptions, TrainResult, VisionTrainOptions

__all__ = ["evaluate_classifier", "train_classifier", "evaluate_lm", "tail_mean", "train_lm", "append_jsonl",
           "read_jsonl", "write_json", "LMTrainOptions", "TrainResult", "VisionTrainOptions", "run_baseline"]


def run_baseline(*args, **kwargs):
    """See :func:`syno.train.baseline.run_baseline` (imported lazily: it pulls in models and data)."""
    from .baseline import run_baseline as _run

    return _run(*args, **kwargs)
