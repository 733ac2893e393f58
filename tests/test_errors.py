"""Error codes and constructors of bastion.errors (C-S API "Standard error response")."""

import re
from pathlib import Path

import pytest

from bastion import errors
from bastion.errors import (
    MatrixError,
    bad_json,
    forbidden,
    invalid_param,
    limit_exceeded,
    missing_param,
    missing_token,
    not_found,
    not_json,
    too_large,
    unknown_token,
    unrecognized,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "bastion"


def test_every_errcode_used_in_src_is_a_constant():
    used = set()
    for path in SRC.rglob("*.py"):
        used |= set(re.findall(r'"(M_[A-Z_]+)"', path.read_text("utf-8")))
    assert used, "no error code found: the scan is broken"
    missing = sorted(code for code in used if getattr(errors, code, None) != code)
    assert not missing, f"error codes without a constant in bastion.errors: {missing}"


@pytest.mark.parametrize(
    ("make", "errcode", "status"),
    [
        (lambda: bad_json("m"), "M_BAD_JSON", 400),
        (lambda: not_json("m"), "M_NOT_JSON", 400),
        (lambda: invalid_param("m"), "M_INVALID_PARAM", 400),
        (lambda: missing_param("m"), "M_MISSING_PARAM", 400),
        (lambda: forbidden("m"), "M_FORBIDDEN", 403),
        (lambda: not_found("m"), "M_NOT_FOUND", 404),
        (lambda: too_large("m"), "M_TOO_LARGE", 413),
        (lambda: too_large("m", 400), "M_TOO_LARGE", 400),
        (lambda: unrecognized("m"), "M_UNRECOGNIZED", 404),
        (lambda: unrecognized("m", 405), "M_UNRECOGNIZED", 405),
        (lambda: missing_token(), "M_MISSING_TOKEN", 401),
    ],
)
def test_constructors(make, errcode, status):
    e = make()
    assert isinstance(e, MatrixError)
    assert (e.errcode, e.status) == (errcode, status)
    assert e.to_json()["errcode"] == errcode
    assert isinstance(e.to_json()["error"], str) and e.to_json()["error"]


def test_limit_exceeded_carries_retry_after_ms():
    e = limit_exceeded(1500)
    assert (e.errcode, e.status) == ("M_LIMIT_EXCEEDED", 429)
    assert e.to_json() == {
        "errcode": "M_LIMIT_EXCEEDED",
        "error": "too many requests",
        "retry_after_ms": 1500,
    }
    # Never 0 or negative: a client would retry at once.
    assert limit_exceeded(0).extra["retry_after_ms"] == 1
    assert limit_exceeded(-5).extra["retry_after_ms"] == 1
    assert limit_exceeded(2.7).extra["retry_after_ms"] == 2  # type: ignore[arg-type]


def test_unknown_token_says_whether_to_soft_logout():
    assert unknown_token().to_json() == {
        "errcode": "M_UNKNOWN_TOKEN",
        "error": "unknown or expired access token",
        "soft_logout": False,
    }
    e = unknown_token("token expired", soft_logout=True)
    assert e.status == 401
    assert e.to_json()["soft_logout"] is True
