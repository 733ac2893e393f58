"""``GET /_bastion/metrics`` (api/metrics.py): the Prometheus text format (0.0.4), checked by
``prometheus_client``'s parser and line by line against the format's grammar; answered only to
addresses in ``guard.alerts.metrics_allow_ips``, every other address getting exactly what an
unknown endpoint gets."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounts import run_on_server
from tests.support.harness import Client, ServerThread

PATH = "/_bastion/metrics"
# The text format 0.0.4, line by line: comments (HELP, TYPE) and samples.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|Inf)|NaN)"
HELP = re.compile(rf"# HELP ({_NAME}) (?:[^\\\n]|\\\\|\\n)*")
TYPE = re.compile(rf"# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)")
SAMPLE = re.compile(rf"({_NAME})(?:\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})? {_VALUE}(?: -?\d+)?")


def check_format(text: str) -> None:
    """Every line is a HELP, a TYPE or a sample; each metric's HELP and TYPE come once, before
    its samples; the text ends with a newline."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    for line in text.rstrip("\n").split("\n"):
        if m := HELP.fullmatch(line):
            continue
        if m := TYPE.fullmatch(line):
            assert m.group(1) not in typed, line
            typed[m.group(1)] = m.group(2)
            continue
        m = SAMPLE.fullmatch(line)
        assert m is not None, f"not a sample line: {line!r}"
        assert m.group(1) in typed, f"sample before its TYPE: {line!r}"


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data").start()
    yield s
    s.stop()


def count(srv: ServerThread, *args) -> None:
    assert srv.hs is not None

    async def go() -> None:
        srv.hs.guard.alerts.count(*args)

    run_on_server(srv, go())


def test_loopback_reads_the_counters_in_the_text_format(srv):
    count(srv, "bastion_guard_decisions_total",
          {"source": "classifier", "outcome": "block", "status": "done"}, 3)  # fmt: skip
    count(srv, "bastion_guard_rate_limited_total", {"limit": "message"})
    count(srv, "bastion_guard_alerts_total", {"kind": 'odd "kind"\\ with\nnewline'})
    count(srv, "bastion_guard_login_blocks_total", {"source": "login.stuffing"}, 2)
    r = Client(srv.base_url).request("GET", PATH, token=None)
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert r.headers["Cache-Control"] == "no-store"
    text = r.body["_raw"].decode("utf-8")
    check_format(text)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # prometheus_client names a counter family without its _total suffix.
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values() for s in f.samples
    }  # fmt: skip
    assert families["bastion_guard_decisions"].type == "counter"
    key = ("bastion_guard_decisions_total",
           (("outcome", "block"), ("source", "classifier"), ("status", "done")))  # fmt: skip
    assert samples[key] == 3
    assert samples[("bastion_guard_rate_limited_total", (("limit", "message"),))] == 1
    assert samples[("bastion_guard_alerts_total", (("kind", 'odd "kind"\\ with\nnewline'),))] == 1
    assert samples[("bastion_guard_login_blocks_total", (("source", "login.stuffing"),))] == 2
    # Known metrics are described even before anything is counted.
    assert "bastion_guard_alerts_coalesced" in families
    queue = [s for s in families["bastion_guard_alert_queue_length"].samples]
    assert {s.labels["channel"] for s in queue} == {"room", "webhook"}


def test_other_addresses_get_what_an_unknown_endpoint_gets(tmp_path):
    srv = ServerThread(tmp_path / "data", guard={"alerts": {"metrics_allow_ips": ["10.0.0.0/8"]}})
    srv.start()
    try:
        c = Client(srv.base_url)
        unknown = c.request("GET", "/_bastion/nothing-here", token=None)
        assert unknown.status == 404 and unknown.body["errcode"] == "M_UNRECOGNIZED"
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            r = c.request(method, PATH, token=None, body={} if method != "GET" else None)
            assert (r.status, r.body) == (unknown.status, unknown.body), method
        # An access token changes nothing (admins included: it is decided by address).
        r = c.request("GET", PATH, token="whatever")
        assert (r.status, r.body) == (unknown.status, unknown.body)
    finally:
        srv.stop()


def test_allowed_addresses_see_405_for_other_methods(srv):
    r = Client(srv.base_url).request("POST", PATH, {}, token=None)
    assert r.status == 405 and r.body["errcode"] == "M_UNRECOGNIZED"
    r = Client(srv.base_url).request("HEAD", PATH, token=None)
    assert r.status == 200
