"""Collect everything the figures and the HTML report can use, tolerating partial and damaged inputs.

:func:`collect` takes session directories and/or loose files and classifies what it finds:

* **kernels**: every ``<acc5>_<hash>`` / ``ERROR_<hash>`` directory of a session (``meta.json``,
  ``operator.json``, ``loop.txt``, ``graph.dot``, the standalone ``.py``);
* **baselines**: ``baseline.json`` as ``syno baseline`` writes it (one record: ``model``,
  ``dataset``, ``accuracy``/``loss``, ``flops``, ``params``, ``history``) or in the original's
  keyed form ``{"<model>[-imagenet]": {"accuracy", "flops", "params"}, "gpt": {"loss", ...}}``;
* **bench rows**: CSV files with the columns of :class:`syno.bench.core.BenchRow` (``syno bench --out``);
* **reevaluations**: JSON files whose entries carry a kernel name/hash and a reevaluated
  accuracy/loss: ``syno.post.reevaluate``'s per-kernel ``reeval.json`` and its
  ``reeval-<dataset>.json`` summary (see :func:`_reeval_entries` for the shapes read);
* **quantization**: ``quantize.json`` of ``syno.post.quantize`` (fp32/int8 accuracy and latency);
* **loss curves**: JSON-lines logs of ``{"step", "time_s", "loss"}`` entries (the LM trainer's
  ``metrics.jsonl``), the original's ``loss.log`` (a Python list of ``(loss, timestamp)``
  tuples), the ``history`` of an LM ``baseline.json``, and the ``history`` a kernel's
  ``meta.json`` may hold.

Inside a session directory the files at its top level and in its non-kernel subdirectories (two
levels deep) are classified the same way. Nothing here raises on bad input: an unreadable file
becomes one line in :attr:`Inputs.problems`.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from syno.session import KERNEL_DIR_RE, KernelDir, is_ok, read_kernel_dir, read_session_info, session_target

__all__ = ["KernelDir", "Session", "Baseline", "BenchCsvRow", "ReevalEntry", "QuantizeResult", "LossCurve", "Inputs",
           "collect", "load_session", "BASELINE_VARIANT"]
BASELINE_VARIANT = "baseline"
_SKIP_DIRS = {".post-cache", ".scheduler-cache", ".send-cache", "__pycache__", ".git"}
_MAX_FILE_BYTES = 64 << 20


def _num(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _find_key(obj: Any, key: str, depth: int = 3) -> Any:
    """First value of ``key`` in nested dicts (breadth first, up to ``depth`` levels)."""
    level = [obj]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            if isinstance(d, dict):
                if key in d and d[key] not in (None, ""):
                    return d[key]
                nxt.extend(v for v in d.values() if isinstance(v, dict))
        level = nxt
    return None


# ------------------------------------------------------------------------------------------ records
@dataclass
class Session:
    root: Path
    info: dict[str, Any] = field(default_factory=dict)   #: session.json (empty if absent)
    kernels: list[KernelDir] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def model(self) -> str | None:
        v = _find_key(self.info, "model")
        if isinstance(v, dict):
            v = v.get("name")
        if isinstance(v, str) and v:
            return v
        models = {k.model for k in self.kernels if k.model}
        if len(models) == 1:
            return models.pop()
        m = re.match(r"^(.+?)-session$", self.root.name)
        return m.group(1) if m else None

    @property
    def dataset(self) -> str | None:
        v = _find_key(self.info, "dataset")
        if isinstance(v, dict):
            v = v.get("name")
        if isinstance(v, str) and v:
            return v
        sets = {k.meta.get("dataset") for k in self.kernels if isinstance(k.meta.get("dataset"), str)}
        return sets.pop() if len(sets) == 1 else None  # e.g. syno.post train-custom's kernel dirs

    @property
    def target(self) -> str:
        v = _find_key(self.info, "target")
        return v if v in ("accuracy", "loss") else session_target(self.info, self.kernels)

    @property
    def algorithm(self) -> str | None:
        v = _find_key(self.info, "algorithm")
        if isinstance(v, dict):
            v = v.get("name")
        if isinstance(v, str):
            return v
        algos = {k.record.algorithm for k in self.kernels if k.record is not None and k.record.algorithm}
        return ", ".join(sorted(map(str, algos))) or None

    @property
    def reference(self) -> dict[str, Any]:
        """The original model's profile recorded by the search (``options.reference``: macs, params)."""
        v = _find_key(self.info, "reference")
        return v if isinstance(v, dict) else {}

    @property
    def baseline_flops(self) -> float | None:
        """MACs per sample of the original model: ``baseline_flops`` or ``reference.macs`` in session.json."""
        v = _num(_find_key(self.info, "baseline_flops")) or _num(self.reference.get("macs"))
        return v if v and v > 0 else None

    @property
    def baseline_params(self) -> float | None:
        v = _num(self.reference.get("params"))
        return v if v and v > 0 else None

    def ranked(self) -> list[KernelDir]:
        """Successful kernels, best first (accuracy descending, or loss ascending), ties by FLOPs, name."""
        ok = [k for k in self.kernels if k.ok]
        if self.target == "loss":
            key = lambda k: (k.loss if k.loss is not None else math.inf, k.flops or math.inf, k.name)  # noqa: E731
        else:
            key = lambda k: (-(k.accuracy if k.accuracy is not None else -math.inf), k.flops or math.inf,  # noqa: E731
                             k.name)
        return sorted(ok, key=key)

    def metric(self, k: KernelDir) -> float | None:
        return k.metric(self.target)


@dataclass
class Baseline:
    model: str
    dataset: str | None
    accuracy: float | None
    loss: float | None
    flops: float | None
    params: float | None
    source: Path
    status: str = "ok"


@dataclass
class BenchCsvRow:
    """One row of a ``syno bench`` CSV as read back (only the fields the figures use; ``raw`` has them
    all). :class:`syno.bench.core.BenchRow` is the row as measured and written."""

    scope: str
    model: str
    variant: str
    op_hash: str
    backend: str
    device: str
    device_name: str
    batch: int
    median_ms: float | None
    speedup: float | None
    layer: str
    count: int
    status: str
    input_shape: str
    source: Path
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.median_ms is not None and self.median_ms > 0

    @property
    def is_baseline(self) -> bool:
        return self.variant == BASELINE_VARIANT

    @property
    def scenario(self) -> str:
        """Where and how it ran: ``<device name> <backend> N=<batch>``."""
        dev = self.device_name or self.device or "?"
        return f"{dev} · {self.backend} · N={self.batch}"


@dataclass
class ReevalEntry:
    """A kernel's reevaluated result (e.g. trained on ImageNet after a CIFAR search)."""

    name: str                   #: kernel directory name (may be empty)
    hash: str                   #: operator hash (may be empty)
    model: str | None
    dataset: str | None
    accuracy: float | None
    loss: float | None
    flops: float | None
    params: float | None
    source: Path
    status: str = "ok"
    history: list | None = None  #: training log (LM: ``{"step", "time_s", "loss"}`` entries)


@dataclass
class QuantizeResult:
    """``quantize.json`` of ``syno.post.quantize``: fp32/int8 accuracy and side-by-side latency of the
    original model and (optionally) the model with an operator."""

    model: str | None
    dataset: str | None
    operator: str | None        #: kernel dir name or hand-built operator name
    operator_hash: str | None
    variants: dict[str, dict[str, Any]]   #: "original" / "operator" -> fp32_accuracy, int8_accuracy, fp32_ms, int8_ms
    source: Path
    latency: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossCurve:
    label: str
    role: str                   #: "baseline" or "kernel"
    losses: list[float]
    steps: list[float] | None   #: optimizer steps (None: use the entry index)
    source: Path


@dataclass
class Inputs:
    sessions: list[Session] = field(default_factory=list)
    baselines: list[Baseline] = field(default_factory=list)
    bench: list[BenchCsvRow] = field(default_factory=list)
    reevals: list[ReevalEntry] = field(default_factory=list)
    quantize: list[QuantizeResult] = field(default_factory=list)
    loss_curves: list[LossCurve] = field(default_factory=list)
    files: list[tuple[Path, str]] = field(default_factory=list)   #: (file, what it was read as)
    problems: list[str] = field(default_factory=list)

    # -- lookups used by the figures ---------------------------------------------------------
    @property
    def kernels(self) -> list[KernelDir]:
        return [k for s in self.sessions for k in s.kernels]

    def session_of(self, kernel: KernelDir) -> Session | None:
        for s in self.sessions:
            if s.root == kernel.session:
                return s
        return None

    def find_kernel(self, name: str = "", op_hash: str = "", model: str | None = None) -> KernelDir | None:
        """The session kernel named ``name`` or with operator hash ``op_hash`` (preferring ``model``)."""
        hits = []
        for k in self.kernels:
            if (name and k.name == name) or (op_hash and k.hash == op_hash):
                hits.append(k)
        if not hits:
            return None
        if model:
            same = [k for k in hits if self.kernel_model(k) == model]
            if same:
                hits = same
        ok = [k for k in hits if k.ok]
        return (ok or hits)[0]

    def kernel_model(self, k: KernelDir) -> str | None:
        if k.model:
            return k.model
        s = self.session_of(k)
        return s.model if s else None

    def baseline_for(self, model: str | None, dataset: str | None = None, *, metric: str = "accuracy"
                     ) -> Baseline | None:
        """The baseline of ``model`` (on ``dataset`` when given and known) that has ``metric``."""
        if model is None:
            return None
        cands = [b for b in self.baselines if b.model == model and getattr(b, metric) is not None]
        if dataset is not None:
            same = [b for b in cands if b.dataset == dataset]
            if same:
                return same[-1]
            cands = [b for b in cands if b.dataset is None]
        return cands[-1] if cands else None

    def reeval_for(self, k: KernelDir) -> ReevalEntry | None:
        for r in self.reevals:
            if (r.name and r.name == k.name) or (r.hash and r.hash == k.hash):
                return r
        return None

    def summary(self) -> str:
        parts = [f"{len(self.sessions)} session(s) with {len(self.kernels)} kernel(s)",
                 f"{len(self.baselines)} baseline(s)", f"{len(self.bench)} bench row(s)",
                 f"{len(self.reevals)} reevaluation(s)", f"{len(self.quantize)} quantization result(s)",
                 f"{len(self.loss_curves)} loss curve(s)"]
        return ", ".join(parts)


# ------------------------------------------------------------------------------------------ readers
def load_session(root: str | Path, problems: list[str] | None = None) -> Session:
    """A session directory: ``session.json`` (if any) and every kernel directory, in evaluation order
    (read with :mod:`syno.session`; what cannot be read becomes a line in ``problems``)."""
    root = Path(root)
    problems = problems if problems is not None else []
    s = Session(root=root)
    s.info, problem = read_session_info(root)
    if problem:
        problems.append(problem)
    for d in sorted(root.iterdir()):
        if d.is_dir() and KERNEL_DIR_RE.match(d.name):
            k = read_kernel_dir(d)
            if k.problem == "no meta.json":
                problems.append(f"{d}: {k.problem}")
            elif k.problem:
                problems.append(f"{d / 'meta.json'}: {k.problem}")
            s.kernels.append(k)
    target = s.target
    for k in s.kernels:  # a kernel without meta.json: its directory-name prefix encodes the target's metric
        k.target = target
    s.kernels.sort(key=lambda k: (k.time if k.time is not None else math.inf, k.name))
    return s


def is_session_dir(p: Path) -> bool:
    if not p.is_dir():
        return False
    if (p / "session.json").is_file():
        return True
    try:  # kernel directories with a meta.json (reevaluate's out dirs hold only reeval.json)
        return any(c.is_dir() and KERNEL_DIR_RE.match(c.name) and (c / "meta.json").is_file() for c in p.iterdir())
    except OSError:
        return False


def _baselines_from(data: Any, source: Path) -> list[Baseline]:
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("model"), str) and ("accuracy" in data or "loss" in data):
        return [Baseline(model=data["model"], dataset=data.get("dataset") if isinstance(data.get("dataset"), str)
                         else None, accuracy=_num(data.get("accuracy")), loss=_num(data.get("loss")),
                         flops=_num(data.get("flops")), params=_num(data.get("params")), source=source,
                         status=str(data.get("status", "ok")))]
    out = []
    for key, rec in data.items():  # the original's {"resnet18": {...}, "resnet18-imagenet": {...}, "gpt": {...}}
        if not isinstance(rec, dict) or not any(k in rec for k in ("accuracy", "loss")) or KERNEL_DIR_RE.match(key):
            continue
        model, dataset = key, None
        if key.endswith("-imagenet"):
            model, dataset = key[: -len("-imagenet")], "imagenet"
        elif key == "gpt":
            model, dataset = "gpt2", "lm1b"
        out.append(Baseline(model=model, dataset=dataset, accuracy=_num(rec.get("accuracy")),
                            loss=_num(rec.get("loss")), flops=_num(rec.get("flops")),
                            params=_num(rec.get("params")), source=source))
    return out


def _history_curve(history: Any, label: str, role: str, source: Path) -> LossCurve | None:
    if not isinstance(history, list):
        return None
    losses, steps = [], []
    for e in history:
        if isinstance(e, dict) and "loss" in e and ("step" in e or "time_s" in e) and "epoch" not in e:
            v = _num(e.get("loss"))
            if v is None:
                continue
            losses.append(v)
            steps.append(_num(e.get("step")))
    if len(losses) < 2:
        return None
    return LossCurve(label, role, losses, steps if all(s is not None for s in steps) else None, source)


def _bench_rows(path: Path) -> list[BenchCsvRow]:
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            try:
                batch = int(float(raw.get("batch") or 0))
                count = int(float(raw.get("count") or 1))
            except ValueError:
                batch, count = 0, 1
            rows.append(BenchCsvRow(
                scope=(raw.get("scope") or "").strip(), model=(raw.get("model") or "").strip(),
                variant=(raw.get("variant") or "").strip(), op_hash=(raw.get("op_hash") or "").strip(),
                backend=(raw.get("backend") or "").strip(), device=(raw.get("device") or "").strip(),
                device_name=(raw.get("device_name") or "").strip(), batch=batch,
                median_ms=_num(raw.get("median_ms")), speedup=_num(raw.get("speedup")),
                layer=(raw.get("layer") or "").strip(), count=count, status=(raw.get("status") or "ok").strip(),
                input_shape=(raw.get("input_shape") or "").strip(), source=path, raw=dict(raw)))
    return rows


def _reeval_entries(data: Any, source: Path) -> list[ReevalEntry]:
    """Entries of a reevaluation file. Read shapes: a list of entries, or a dict holding one under
    ``kernels``/``results``/``entries``/``reevaluated``, or a dict keyed by kernel name. An entry
    names its kernel by ``name``/``kernel``/``dir``/``original_dir``/``source_dir`` and/or
    ``hash``/``operator_hash``/``op_hash``, and has ``accuracy`` or ``loss``; ``model``/``dataset``
    are read from the entry or the file's top level."""
    top: dict[str, Any] = data if isinstance(data, dict) else {}
    items: list[Any] = []
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        for key in ("kernels", "results", "entries", "reevaluated", "reeval"):
            if isinstance(data.get(key), list):
                items = data[key]
                break
        else:
            items = [dict(v, name=k) for k, v in data.items() if isinstance(v, dict) and KERNEL_DIR_RE.match(k)]
    out = []
    for e in items:
        if not isinstance(e, dict):
            continue
        res = e.get("result") if isinstance(e.get("result"), dict) else {}
        acc = _num(e.get("accuracy", res.get("accuracy")))
        loss = _num(e.get("loss", res.get("loss")))
        if acc is None and loss is None:
            continue
        name = ""
        for key in ("name", "kernel", "original_dir", "source_dir", "dir", "kernel_dir"):
            v = e.get(key)
            if isinstance(v, str) and v:
                cand = Path(v).name
                if KERNEL_DIR_RE.match(cand):
                    name = cand
                    break
                name = name or cand
        h = ""
        for key in ("operator_hash", "op_hash", "hash"):
            if isinstance(e.get(key), str) and e[key]:
                h = e[key]
                break
        if not h and KERNEL_DIR_RE.match(name):
            h = KERNEL_DIR_RE.match(name).group("hash")
        model = e.get("model", top.get("model"))
        dataset = e.get("dataset", top.get("dataset"))
        out.append(ReevalEntry(name=name, hash=h, model=model if isinstance(model, str) else None,
                               dataset=dataset if isinstance(dataset, str) else None, accuracy=acc, loss=loss,
                               flops=_num(e.get("flops", res.get("flops"))),
                               params=_num(e.get("params", res.get("params"))), source=source,
                               status=str(e.get("status", res.get("status", "ok"))),
                               history=e.get("history") if isinstance(e.get("history"), list) else None))
    return out


def _quantize_result(data: dict[str, Any], source: Path) -> QuantizeResult | None:
    variants = data.get("variants")
    if not isinstance(variants, dict) or not variants:
        return None
    clean = {}
    for name, v in variants.items():
        if isinstance(v, dict):
            clean[str(name)] = {k: _num(v.get(k)) for k in ("fp32_accuracy", "int8_accuracy", "fp32_ms", "int8_ms",
                                                             "flops", "params")}
    return QuantizeResult(model=data.get("model") if isinstance(data.get("model"), str) else None,
                          dataset=data.get("dataset") if isinstance(data.get("dataset"), str) else None,
                          operator=data.get("operator") if isinstance(data.get("operator"), str) else None,
                          operator_hash=data.get("operator_hash") if isinstance(data.get("operator_hash"), str)
                          else None, variants=clean, source=source,
                          latency=data.get("latency") if isinstance(data.get("latency"), dict) else {})


def _parse_loss_log(text: str) -> tuple[list[float], list[float] | None] | None:
    """The original's ``loss.log``: a Python list of ``(loss, timestamp)`` (or ``(time, loss)``) pairs,
    or plain numbers."""
    try:
        data = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(data, (list, tuple)) or len(data) < 2:
        return None
    losses: list[float] = []
    if all(isinstance(x, (int, float)) for x in data):
        losses = [float(x) for x in data]
    elif all(isinstance(x, (list, tuple)) and len(x) == 2 for x in data):
        a = [float(x[0]) for x in data]
        b = [float(x[1]) for x in data]
        # A unix timestamp is ~1e9 and increasing; the loss is the other column.
        losses = b if (min(a) > 1e6 and max(b) < 1e6) else a
    else:
        return None
    return [v for v in losses if math.isfinite(v)], None


def _classify_file(path: Path, inputs: Inputs, *, in_kernel: KernelDir | None = None) -> None:
    """Read one file into ``inputs`` if it is something the figures use."""
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            return
    except OSError:
        return
    name = path.name
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if {"scope", "variant", "backend", "median_ms"} <= set(header):
                rows = _bench_rows(path)
                inputs.bench.extend(rows)
                inputs.files.append((path, f"bench CSV ({len(rows)} rows)"))
        elif suffix == ".jsonl":
            entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            role = "baseline" if _looks_baseline(path) else "kernel"
            label = _curve_label(path, in_kernel, role)
            c = _history_curve(entries, label, role, path)
            if c is not None:
                inputs.loss_curves.append(c)
                inputs.files.append((path, f"loss log ({len(c.losses)} entries)"))
        elif suffix == ".json":
            if name in ("meta.json", "operator.json", "session.json", "state.json", "inflight.json"):
                return
            data = _read_json(path)
            if isinstance(data, dict) and str(data.get("format", "")).startswith("syno.quantize"):
                q = _quantize_result(data, path)
                if q is not None:
                    inputs.quantize.append(q)
                    inputs.files.append((path, f"quantization ({q.model}, {q.operator or 'original only'})"))
                return
            got = False
            bl = _baselines_from(data, path) if (name.startswith("baseline") or
                                                 (isinstance(data, dict) and "model" in data)) else []
            if bl:
                inputs.baselines.extend(bl)
                inputs.files.append((path, f"baseline ({', '.join(b.model for b in bl)})"))
                got = True
                if len(bl) == 1 and bl[0].loss is not None and isinstance(data, dict):
                    c = _history_curve(data.get("history"), f"{bl[0].model} baseline", "baseline", path)
                    if c is not None:
                        inputs.loss_curves.append(c)
            if not got and name != "selected.json":
                ents = _reeval_entries(data, path)
                if ents:
                    inputs.reevals.extend(ents)
                    inputs.files.append((path, f"reevaluation ({len(ents)} kernels)"))
        elif suffix in (".log", ".txt") and ("loss" in name.lower()):
            text = path.read_text()
            parsed = _parse_loss_log(text)
            if parsed is None:  # maybe JSON lines
                entries = []
                for line in text.splitlines():
                    if line.strip():
                        entries.append(json.loads(line))
                role = "baseline" if _looks_baseline(path) else "kernel"
                c = _history_curve(entries, _curve_label(path, in_kernel, role), role, path)
            else:
                losses, steps = parsed
                role = "baseline" if _looks_baseline(path) else "kernel"
                c = LossCurve(_curve_label(path, in_kernel, role), role, losses, steps, path) \
                    if len(losses) >= 2 else None
            if c is not None:
                inputs.loss_curves.append(c)
                inputs.files.append((path, f"loss log ({len(c.losses)} entries)"))
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        inputs.problems.append(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:120]})")


def _looks_baseline(path: Path) -> bool:
    low = str(path).lower()
    return "baseline" in low or "orig" in path.name.lower() or (path.parent / "baseline.json").is_file()


def _curve_label(path: Path, kernel: KernelDir | None, role: str) -> str:
    if kernel is not None:
        return kernel.name
    if path.stem in ("metrics", "loss", "losses") and path.parent.name:
        return path.parent.name
    return path.stem


def _walk_extra(root: Path, inputs: Inputs, depth: int) -> None:
    try:
        children = sorted(root.iterdir())
    except OSError as exc:
        inputs.problems.append(f"{root}: unreadable ({exc})")
        return
    for c in children:
        if c.name in _SKIP_DIRS or c.name.startswith(".tmp-"):
            continue
        if c.is_file():
            _classify_file(c, inputs)
        elif c.is_dir() and KERNEL_DIR_RE.match(c.name):  # e.g. reevaluate(out=...)/<kernel>/reeval.json
            for f in sorted(c.glob("reeval*.json")):
                _classify_file(f, inputs)
        elif c.is_dir() and depth > 0:
            if is_session_dir(c):
                _add_session(c, inputs)
            else:
                _walk_extra(c, inputs, depth - 1)


def _add_session(root: Path, inputs: Inputs) -> None:
    if any(s.root == root for s in inputs.sessions):
        return
    s = load_session(root, inputs.problems)
    inputs.sessions.append(s)
    inputs.files.append((root, f"session ({len(s.kernels)} kernels)"))
    for k in s.kernels:
        # Loss histories a kernel may carry (LM searches) and loss logs written next to it.
        hist = k.meta.get("history")
        if hist is None and isinstance(k.meta.get("result"), dict):
            extra = k.meta["result"].get("extra")
            hist = extra.get("history") if isinstance(extra, dict) else None
        c = _history_curve(hist, k.name, "kernel", k.dir / "meta.json")
        if c is not None:
            inputs.loss_curves.append(c)
        for f in sorted(k.dir.iterdir()) if k.dir.is_dir() else []:
            if f.is_file() and (f.suffix == ".jsonl" or (f.suffix in (".log", ".txt") and "loss" in f.name.lower())
                                or f.name.startswith("reeval") and f.suffix == ".json"):
                _classify_file(f, inputs, in_kernel=k)
    _walk_extra(root, inputs, depth=2)


def collect(paths: Iterable[str | Path]) -> Inputs:
    """Read sessions and loose files (see the module docstring); never raises for bad content."""
    inputs = Inputs()
    for p in paths:
        p = Path(p)
        if not p.exists():
            inputs.problems.append(f"{p}: does not exist")
        elif p.is_file():
            _classify_file(p, inputs)
        elif is_session_dir(p):
            _add_session(p, inputs)
        elif p.is_dir():
            _walk_extra(p, inputs, depth=2)
    # The same file can be reached twice (a session given together with one of its files).
    seen: set[tuple] = set()
    uniq = []
    for c in inputs.loss_curves:
        key = (str(c.source), c.label)
        if key not in seen:
            seen.add(key)
            uniq.append(c)
    inputs.loss_curves = uniq
    seen_rows: set[tuple] = set()
    rows = []
    for r in inputs.bench:
        key = (str(r.source.resolve()), tuple(sorted(r.raw.items())))
        if key not in seen_rows:
            seen_rows.add(key)
            rows.append(r)
    inputs.bench = rows
    # A kernel's reeval.json and the run's reeval-<dataset>.json summary hold the same entry: keep one
    # per (kernel, dataset), preferring an ok one with a training log.
    best: dict[tuple, ReevalEntry] = {}
    for e in inputs.reevals:
        key = (e.hash or e.name, e.dataset)
        old = best.get(key)
        rank = lambda x: (is_ok(x.status), x.history is not None)  # noqa: E731
        if old is None or rank(e) > rank(old):
            best[key] = e
    inputs.reevals = list(best.values())
    have = {(str(c.source), c.label) for c in inputs.loss_curves}
    for e in inputs.reevals:
        c = _history_curve(e.history, e.name or e.hash, "kernel", e.source)
        if c is not None and (str(c.source), c.label) not in have:
            inputs.loss_curves.append(c)
    return inputs


def group_by(items: Sequence[Any], key) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return out
