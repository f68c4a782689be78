"""``syno baseline --session S`` trains the baseline with the session's own recipe, so the two
compare side by side (issue #19 item 7: the baseline used batch 128 / lr 0.1 while the search's
kernels trained with batch 32 / lr 0.2)."""

import json
import os
import stat

from typer.testing import CliRunner

from syno import __version__
from syno.cli import app
from syno.search.options import build_options
from syno.search.session import SessionStore

runner = CliRunner()


def _session(tmp_path):
    s = tmp_path / "s"
    opts = build_options("tiny", {"train.max_steps_per_epoch": 2, "train.lr": 0.15, "train.seed": 7,
                                  "image_size": 12, "session_dir": str(s)})
    SessionStore(s).create({"options": opts.to_json_dict(), "syno": __version__})
    return s, opts


def test_baseline_follows_the_session_recipe(tmp_path):
    s, opts = _session(tmp_path)
    res = runner.invoke(app, ["baseline", "--session", str(s), "--no-progress"])
    assert res.exit_code == 0, res.output + str(res.exception)
    record = json.loads((s / "baseline.json").read_text())  # next to session.json by default
    assert record["model"] == "tiny" and record["dataset"] == "digits" and record["image_size"] == 12
    train = opts.train.model_dump(mode="json")
    for key in ("epochs", "batch_size", "lr", "weight_decay", "seed", "max_steps_per_epoch", "time_budget_s"):
        assert record["options"][key] == train[key], key
    assert record["options"]["batch_size"] == 32 and record["options"]["lr"] == 0.15
    printed = json.loads(res.stdout.strip().splitlines()[-1])
    assert printed["batch_size"] == 32 and printed["lr"] == 0.15
    # baseline.json gets the umask's mode like other files, not mkstemp's private 0600
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((s / "baseline.json").stat().st_mode) == 0o666 & ~umask


def test_baseline_session_options_still_override_and_names_must_match(tmp_path):
    s, _ = _session(tmp_path)
    out = tmp_path / "b"
    res = runner.invoke(app, ["baseline", "--session", str(s), "--lr", "0.05", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output + str(res.exception)
    rec = json.loads((out / "baseline.json").read_text())
    assert rec["options"]["lr"] == 0.05 and rec["options"]["batch_size"] == 32
    res = runner.invoke(app, ["baseline", "resnet18", "--session", str(s)])
    assert res.exit_code == 2 and "'tiny'" in res.stderr and "'resnet18'" in res.stderr
    res = runner.invoke(app, ["baseline"])
    assert res.exit_code == 2 and "--session" in res.stderr
