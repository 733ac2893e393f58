"""The server-name resolution decision procedure, driven with canned DNS and .well-known
answers (S-S API "Resolving server names", steps 1–6 and 3.1–3.5)."""

import pytest

from bastion.core.server_name_resolution import (
    WELL_KNOWN_DEFAULT_CACHE_MS,
    WELL_KNOWN_ERROR_CACHE_MS,
    WELL_KNOWN_MAX_CACHE_MS,
    AddressLookup,
    ResolutionError,
    SrvLookup,
    SrvRecord,
    WellKnownLookup,
    drive,
    parse_well_known,
    resolve_server_name,
    well_known_cache_ms,
)


class World:
    """Canned answers; records the queries made."""

    def __init__(self, well_known=None, srv=None, a=None, aliases=()):
        self.well_known = well_known or {}
        self.srv = srv or {}
        self.a = a or {}
        self.aliases = set(aliases)
        self.queries = []

    def __call__(self, q):
        self.queries.append(q)
        if isinstance(q, WellKnownLookup):
            return self.well_known.get(q.hostname)
        if isinstance(q, SrvLookup):
            return self.srv.get(q.name, [])
        assert isinstance(q, AddressLookup)
        if not q.allow_cname and q.hostname in self.aliases:
            return []
        return self.a.get(q.hostname, [])


def resolve(name, world):
    return drive(resolve_server_name(name), world)


def test_step1_ip_literals():
    w = World()
    r = resolve("1.2.3.4", w)
    assert (r.endpoints, r.host_header, r.tls_name, r.sni) == (
        (("1.2.3.4", 8448),),
        "1.2.3.4",
        "1.2.3.4",
        None,
    )
    r = resolve("[2001:db8::1]:8000", w)
    assert r.endpoints == (("2001:db8::1", 8000),)
    assert r.host_header == "[2001:db8::1]:8000" and r.tls_name == "2001:db8::1" and r.sni is None
    assert w.queries == []  # no DNS, no .well-known


def test_step2_explicit_port_skips_well_known_and_srv():
    w = World(a={"example.org": ["5.6.7.8"]})
    r = resolve("example.org:1234", w)
    assert r.endpoints == (("5.6.7.8", 1234),)
    assert (r.host_header, r.tls_name, r.sni) == ("example.org:1234", "example.org", "example.org")
    assert w.queries == [AddressLookup("example.org", True)]


def test_step3_1_delegated_ip_literal():
    w = World(well_known={"example.org": "[2001:db8::2]:9000"})
    r = resolve("example.org", w)
    assert r.endpoints == (("2001:db8::2", 9000),)
    assert r.host_header == "[2001:db8::2]:9000" and r.tls_name == "2001:db8::2" and r.sni is None
    r = resolve("example.org", World(well_known={"example.org": "9.9.9.9"}))
    assert r.endpoints == (("9.9.9.9", 8448),) and r.host_header == "9.9.9.9"


def test_step3_2_delegated_host_with_port():
    w = World(
        well_known={"example.org": "matrix.example.net:443"}, a={"matrix.example.net": ["1.1.1.1"]}
    )
    r = resolve("example.org", w)
    assert r.endpoints == (("1.1.1.1", 443),)
    assert r.host_header == "matrix.example.net:443" and r.tls_name == "matrix.example.net"
    assert not any(isinstance(q, SrvLookup) for q in w.queries)


def test_step3_3_delegated_srv_matrix_fed():
    w = World(
        well_known={"example.org": "deleg.example.net"},
        srv={"_matrix-fed._tcp.deleg.example.net": [SrvRecord(10, 0, 8443, "target.example.net")]},
        a={"target.example.net": ["2.2.2.2"]},
    )
    r = resolve("example.org", w)
    assert r.endpoints == (("2.2.2.2", 8443),)
    # Host and certificate are the delegated hostname, not the SRV target.
    assert r.host_header == "deleg.example.net" and r.tls_name == "deleg.example.net"
    assert SrvLookup("_matrix._tcp.deleg.example.net") not in w.queries


def test_step3_4_delegated_deprecated_srv():
    w = World(
        well_known={"example.org": "deleg.example.net"},
        srv={"_matrix._tcp.deleg.example.net": [SrvRecord(10, 0, 8500, "old.example.net")]},
        a={"old.example.net": ["3.3.3.3"]},
    )
    r = resolve("example.org", w)
    assert r.endpoints == (("3.3.3.3", 8500),) and r.host_header == "deleg.example.net"
    assert w.queries.index(SrvLookup("_matrix-fed._tcp.deleg.example.net")) < w.queries.index(
        SrvLookup("_matrix._tcp.deleg.example.net")
    )


def test_step3_5_delegated_no_srv_uses_8448():
    w = World(well_known={"example.org": "deleg.example.net"}, a={"deleg.example.net": ["4.4.4.4"]})
    r = resolve("example.org", w)
    assert r.endpoints == (("4.4.4.4", 8448),) and r.host_header == "deleg.example.net"


def test_invalid_well_known_value_falls_through_to_step4():
    w = World(
        well_known={"example.org": "not a server!"},
        srv={"_matrix-fed._tcp.example.org": [SrvRecord(1, 0, 7000, "t.example.org")]},
        a={"t.example.org": ["5.5.5.5"]},
    )
    assert resolve("example.org", w).endpoints == (("5.5.5.5", 7000),)


def test_steps4_to_6_without_well_known():
    w = World(
        srv={
            "_matrix-fed._tcp.example.org": [
                SrvRecord(20, 0, 1, "b.example.org"),
                SrvRecord(10, 5, 2, "a.example.org"),
            ]
        },
        a={"a.example.org": ["1.0.0.1"], "b.example.org": ["1.0.0.2"]},
    )
    r = resolve("example.org", w)
    assert r.endpoints == (("1.0.0.1", 2), ("1.0.0.2", 1))  # priority order
    assert r.host_header == "example.org" and r.tls_name == "example.org" and r.sni == "example.org"
    w = World(
        srv={"_matrix._tcp.example.org": [SrvRecord(1, 0, 9, "x.example.org")]},
        a={"x.example.org": ["1.0.0.3"]},
    )
    assert resolve("example.org", w).endpoints == (("1.0.0.3", 9),)
    w = World(a={"example.org": ["1.0.0.4", "2606:4700::1"]})
    r = resolve("example.org", w)
    assert r.endpoints == (("1.0.0.4", 8448), ("2606:4700::1", 8448))
    assert [type(q) for q in w.queries] == [WellKnownLookup, SrvLookup, SrvLookup, AddressLookup]


def test_srv_target_must_not_be_an_alias():
    w = World(
        srv={
            "_matrix-fed._tcp.example.org": [
                SrvRecord(1, 0, 8448, "alias.example.org"),
                SrvRecord(2, 0, 8448, "real.example.org"),
            ]
        },
        a={"alias.example.org": ["6.6.6.6"], "real.example.org": ["7.7.7.7"]},
        aliases={"alias.example.org"},
    )
    r = resolve("example.org", w)
    assert r.endpoints == (("7.7.7.7", 8448),)
    assert AddressLookup("alias.example.org", False) in w.queries


def test_srv_dot_target_means_no_service_and_nothing_resolves():
    w = World(srv={"_matrix-fed._tcp.example.org": [SrvRecord(0, 0, 0, ".")]})
    with pytest.raises(ResolutionError):
        resolve("example.org", w)
    with pytest.raises(ResolutionError):
        resolve("nothing.example.org", World())
    with pytest.raises(ResolutionError):
        resolve("bad name", World())


def test_parse_well_known():
    assert parse_well_known(200, b'{"m.server": "a.org:443"}') == "a.org:443"
    assert parse_well_known(200, b'{"m.server": "[::1]"}') == "[::1]"
    for status, body in [
        (404, b'{"m.server": "a.org"}'), (200, b"not json"), (200, b"[]"), (200, b"{}"),
        (200, b'{"m.server": 1}'), (200, b'{"m.server": "a.org:99999"}'),
        (200, b'{"m.server": "https://a.org"}'), (200, b" " * 60000),
    ]:  # fmt: skip
        assert parse_well_known(status, body) is None


def test_well_known_cache_periods():
    now = 1_700_000_000_000
    assert well_known_cache_ms({}, now, True) == WELL_KNOWN_DEFAULT_CACHE_MS
    assert well_known_cache_ms({}, now, False) == WELL_KNOWN_ERROR_CACHE_MS
    assert well_known_cache_ms({"Cache-Control": "public, max-age=600"}, now, True) == 600_000
    assert (
        well_known_cache_ms({"cache-control": "max-age=999999999"}, now, True)
        == WELL_KNOWN_MAX_CACHE_MS
    )
    assert well_known_cache_ms({"Cache-Control": "no-store"}, now, True) == 0
    assert well_known_cache_ms({"Expires": "Tue, 14 Nov 2023 23:13:20 GMT"}, now, True) == 3600_000
    assert well_known_cache_ms({"Expires": "garbage"}, now, True) == 0
    assert (
        well_known_cache_ms({"Expires": "Wed, 01 Jan 2099 00:00:00 GMT"}, now, True)
        == WELL_KNOWN_MAX_CACHE_MS
    )
