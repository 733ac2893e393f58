"""``bastion guard score [--explain]``: the content classifier on JSON lines, for operators
testing their thresholds.

Reads one JSON object per line on standard input, ``{"text": "..."}``, and writes one JSON
line per input line, in input order::

    {"score": 0.9731, "verdict": "spam", "reasons": ["url paypa1.com is a look-alike of ..."]}

``score`` is 0..1 (higher: more likely spam), ``verdict`` ``spam`` (above the block threshold),
``hold`` (above the hold threshold) or ``ok``. The scoring function is the server's
(:func:`bastion.guard.content.score_text`) with the shipped model; the thresholds and brand
list are the server's defaults, or those of ``[guard.classifier]`` in ``--config``, or
``--hold``/``--block``. ``reasons`` names the URL rules that fired; with ``--explain`` also the
features that raised the score most.

Bad input: blank lines are skipped. Any other line that is not a JSON object with a string
``text`` gets, in its place, ``{"error": "line N: ..."}``; the remaining lines are still
scored, and the exit status is then 1 (0 when every line was scored, 2 for a bad
configuration).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

__all__ = ["add_guard_parser", "run_guard"]


def add_guard_parser(sub: Any) -> None:
    guard = sub.add_parser("guard", help="the guard's tools (content classifier)")
    gsub = guard.add_subparsers(dest="guard_command", required=True)
    score = gsub.add_parser(
        "score",
        help='score JSON lines {"text": ...} from standard input with the shipped model',
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    score.add_argument("--explain", action="store_true", help="also name the top features")
    score.add_argument("--config", type=Path, help="read [guard.classifier] from this TOML file")
    score.add_argument("--hold", type=float, help="hold threshold (0..1)")
    score.add_argument("--block", type=float, help="block threshold (0..1)")


def _error(lineno: int, message: str) -> str:
    return json.dumps({"error": f"line {lineno}: {message}"})


def score_lines(
    lines: IO[str], out: IO[str], *, explain: bool = False, config: Any = None,
    hold: float | None = None, block: float | None = None,
) -> int:  # fmt: skip
    """Score every line of ``lines`` into ``out``; the exit status (0, or 1 if any line was
    refused)."""
    from bastion.guard.classifier import parse_classifier_config
    from bastion.guard.classifier.model import shipped_model, verdict_of
    from bastion.guard.content import score_text

    cfg = config if config is not None else parse_classifier_config({})
    model = shipped_model()
    hold = hold if hold is not None else cfg.hold if cfg.hold is not None else model.hold
    block = block if block is not None else cfg.block if cfg.block is not None else model.block
    status = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # (RecursionError: nested too deep)
            out.write(_error(lineno, "not JSON") + "\n")
            status = 1
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            out.write(_error(lineno, 'expected a JSON object with a string "text"') + "\n")
            status = 1
            continue
        try:
            obj["text"].encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape: no message can carry one
            out.write(_error(lineno, '"text" is not valid Unicode') + "\n")
            status = 1
            continue
        s = score_text(model, cfg, obj["text"], hold=hold, block=block, explain=explain)
        record = {
            "score": round(s.score, 4),
            "verdict": verdict_of(s.score, hold, block),
            "reasons": list(s.reasons),
        }
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()
    return status


def run_guard(args: argparse.Namespace) -> int:
    """``bastion guard ...``."""
    from bastion.guard.classifier import parse_classifier_config

    config = None
    try:
        if args.config is not None:
            import tomllib

            with open(args.config, "rb") as f:
                table = tomllib.load(f)
            guard = table.get("guard", {})
            section = guard.get("classifier", {}) if isinstance(guard, dict) else {}
            if not isinstance(section, dict):
                raise ValueError("guard.classifier must be a table")
            config = parse_classifier_config(section)
        for name in ("hold", "block"):
            value = getattr(args, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name} must be from 0 to 1")
        if args.hold is not None and args.block is not None and args.hold > args.block:
            raise ValueError("--hold must not be above --block")
    except (OSError, ValueError) as e:
        print(f"bastion guard: configuration error: {e}", file=sys.stderr)
        return 2
    sys.stdin.reconfigure(errors="replace")  # type: ignore[union-attr]
    return score_lines(
        sys.stdin, sys.stdout, explain=args.explain, config=config, hold=args.hold,
        block=args.block,
    )  # fmt: skip
