"""``bastion guard score`` through a subprocess: one JSON line per input line, in order, the
server's scoring function and thresholds; junk lines answered with an error line, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bastion.guard.classifier import parse_classifier_config
from bastion.guard.classifier.model import shipped_model, verdict_of
from bastion.guard.content import score_text

SRC = Path(__file__).resolve().parents[2] / "src"
SPAM = "You have been selected for a £500 cash prize! Call 09061234567 now to claim at bit.ly/x3"
HAM = "I think the bug is in line 42, you forgot to return the value from the callback"
HOMOGRAPH = "please log in at https://xn--pypal-4ve.com/account to keep it open"


def run(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "guard", "score", *args], input=stdin,
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_scores_in_input_order_with_the_server_function() -> None:
    texts = [SPAM, HAM, HOMOGRAPH, "ünïcode ✓ text"]
    proc = run("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == len(texts)
    model, cfg = shipped_model(), parse_classifier_config({})
    for text, rec in zip(texts, out, strict=True):
        s = score_text(model, cfg, text, hold=model.hold, block=model.block)
        assert rec["score"] == round(s.score, 4)
        assert rec["verdict"] == verdict_of(s.score, model.hold, model.block)
        assert set(rec) == {"score", "verdict", "reasons"}
    assert out[1]["verdict"] == "ok"
    assert out[2]["verdict"] == "spam"
    assert any("imitates paypal.com" in r for r in out[2]["reasons"])


def test_explain_names_features() -> None:
    proc = run(json.dumps({"text": SPAM}) + "\n", "--explain")
    rec = json.loads(proc.stdout)
    assert any(r.startswith("feature ") for r in rec["reasons"])
    plain = json.loads(run(json.dumps({"text": SPAM}) + "\n").stdout)
    assert plain["score"] == rec["score"]
    assert not any(r.startswith("feature ") for r in plain["reasons"])


def test_junk_lines_get_an_error_line_in_place_and_exit_1() -> None:
    lines = [json.dumps({"text": HAM}), "not json", "", json.dumps([1, 2]),
             json.dumps({"text": 5}), json.dumps({"text": SPAM})]  # fmt: skip
    proc = run("\n".join(lines) + "\n")
    assert proc.returncode == 1
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == 5  # the blank line is skipped
    assert "score" in out[0] and "score" in out[4]
    assert out[1] == {"error": "line 2: not JSON"}
    assert out[2]["error"].startswith("line 4:") and out[3]["error"].startswith("line 5:")


def test_thresholds_from_flags_and_config(tmp_path: Path) -> None:
    proc = run(json.dumps({"text": HAM}) + "\n", "--hold", "0", "--block", "0")
    assert json.loads(proc.stdout)["verdict"] == "spam"
    conf = tmp_path / "b.toml"
    conf.write_text("[guard.classifier]\nhold = 0.0\nblock = 1.0\n")
    proc = run(json.dumps({"text": HAM}) + "\n", "--config", str(conf))
    assert json.loads(proc.stdout)["verdict"] == "hold"
    bad = run("", "--hold", "0.9", "--block", "0.5")
    assert bad.returncode == 2 and "configuration error" in bad.stderr
    conf.write_text("[guard.classifier]\nhold = 7\n")
    bad = run("", "--config", str(conf))
    assert bad.returncode == 2 and "guard.classifier.hold" in bad.stderr


def test_deep_json_and_lone_surrogates_are_error_lines_not_tracebacks() -> None:
    lines = ["[" * 100_000 + "]" * 100_000, '{"text": "a\\ud800b"}', json.dumps({"text": HAM})]
    proc = run("\n".join(lines) + "\n")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert out[0] == {"error": "line 1: not JSON"}
    assert out[1] == {"error": 'line 2: "text" is not valid Unicode'}
    assert "score" in out[2]
