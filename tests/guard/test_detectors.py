"""The pure detectors (bastion.guard.detectors): each at and around its threshold, the
configuration table, and encrypted rooms never read."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from bastion.guard import detectors as d
from bastion.guard.signals import EventContext, combine

NOW = 1_800_000_000_000
DAY = 86_400_000
CFG = d.parse_detector_config({})


def ctx(
    etype: str = "m.room.message", content: Mapping[str, Any] | None = None, *,
    state_key: str | None = None, sender: str = "@spam:hs", local: bool = True,
    encrypted: bool = False, created: int | None = NOW - 30 * DAY,
    joined: int | None = NOW - DAY // 2, origin: str = "hs", now: int = NOW,
) -> EventContext:  # fmt: skip
    return EventContext(
        sender=sender, room_id="!r:hs", etype=etype,
        content={"msgtype": "m.text", "body": "hi"} if content is None else content,
        state_key=state_key, now_ms=now, local=local, origin=origin, encrypted_room=encrypted,
        sender_created_ms=created, sender_joined_ms=joined,
    )  # fmt: skip


def member(membership: str, *, sender: str = "@u:hs", target: str | None = None,
           **kw: Any) -> EventContext:  # fmt: skip
    return ctx("m.room.member", {"membership": membership}, state_key=target or sender,
               sender=sender, **kw)  # fmt: skip


def times(n: int, step_ms: int = 1000) -> list[int]:
    """``n`` observation times ending just before NOW."""
    return [NOW - (n - i) * step_ms for i in range(n)]


# -- configuration -------------------------------------------------------------------------------
def test_defaults_follow_the_moderation_bots():
    assert CFG.message_flood.window_s == 60 and CFG.message_flood.warn_above == 10
    assert (CFG.mention_spam.warn_above, CFG.mention_spam.block_above) == (3, 10)
    assert (CFG.join_wave.max_joins, CFG.join_wave.window_s) == (50, 3600)
    assert (CFG.membership_churn.warn_above, CFG.membership_churn.block_above) == (2, 4)
    assert (CFG.density.min_length, CFG.density.max_density) == (150, 0.95)
    assert CFG.length.max_length == 10_000


def test_config_table_is_checked():
    cfg = d.parse_detector_config({
        "enabled": False, "message_flood": {"warn_above": 5, "throttle_above": 0},
        "join_wave": {"max_joins": 8, "cooling_seconds": 2},
        "link_blast": {"severity": "block"},
    })  # fmt: skip
    assert not cfg.enabled and cfg.message_flood.warn_above == 5
    assert cfg.message_flood.throttle_above == 0 and cfg.join_wave.cooling_s == 2
    assert cfg.link_blast.severity == "block"
    for bad, key in [
        ({"nope": 1}, "guard.detectors"),
        ({"message_flood": {"warn_abov": 3}}, "guard.detectors.message_flood"),
        ({"message_flood": {"warn_above": 0}}, "guard.detectors.message_flood.warn_above"),
        ({"mention_spam": {"block_above": "10"}}, "guard.detectors.mention_spam.block_above"),
        ({"join_wave": []}, "guard.detectors.join_wave"),
        ({"first_message": {"severity": "ban"}}, "guard.detectors.first_message.severity"),
        ({"link_blast": {"severity": "info"}}, "guard.detectors.link_blast.severity"),
        ({"density": {"max_density": 2}}, "guard.detectors.density.max_density"),
        ({"join_wave": {"enabled": "yes"}}, "guard.detectors.join_wave.enabled"),
    ]:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            d.parse_detector_config(bad)


# -- message flood -------------------------------------------------------------------------------
def test_flood_warns_on_the_eleventh_message_in_a_minute_once():
    fc = CFG.message_flood
    assert d.message_flood(fc, ctx(), times(9)).signals == ()
    out = d.message_flood(fc, ctx(), times(10))  # the 11th
    assert [s.severity for s in out.signals] == ["warn"] and out.retry_after_ms is None
    assert out.signals[0].source == "detector.message_flood"
    assert out.signals[0].evidence["count"] == 11
    assert d.message_flood(fc, ctx(), times(11)).signals == ()  # the 12th: same episode


def test_flood_throttles_a_local_sender_above_sixty():
    fc = CFG.message_flood
    assert fc.throttle_above == 60
    assert d.message_flood(fc, ctx(), times(59, 500)).retry_after_ms is None  # the 60th passes
    window = times(60, step_ms=500)  # oldest 30 s ago
    out = d.message_flood(fc, ctx(), window)  # the 61st
    assert out.retry_after_ms == 30_000  # when the oldest leaves the 60 s window
    assert out.signals[0].severity == "block"
    # federated senders are not throttled here (the rate limits soft-fail them)
    assert d.message_flood(fc, ctx(local=False), window).retry_after_ms is None
    off = d.parse_detector_config({"message_flood": {"throttle_above": 0}}).message_flood
    assert d.message_flood(off, ctx(), times(40)).retry_after_ms is None


# -- mention spam --------------------------------------------------------------------------------
def mentions(n: int, *, body: str = "hello") -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body,
            "m.mentions": {"user_ids": [f"@u{i}:hs" for i in range(n)]}}  # fmt: skip


@pytest.mark.parametrize(("n", "severity"), [(3, None), (4, "warn"), (10, "warn"), (11, "block")])
def test_mention_spam_thresholds(n, severity):
    out = d.mention_spam(CFG.mention_spam, ctx(content=mentions(n)))
    assert [s.severity for s in out] == ([severity] if severity else [])


def test_mentions_in_the_body_and_pills_count_in_readable_rooms():
    ids = " ".join(f"@v{i}:hs" for i in range(3))
    pills = "".join(f'<a href="https://matrix.to/#/@w{i}:hs">w</a>' for i in range(2))
    content = {**mentions(0, body=f"hey {ids} @V0:hs"), "formatted_body": pills}
    c = ctx(content=content)
    assert d.mentioned_users(c) == {"@v0:hs", "@v1:hs", "@v2:hs", "@w0:hs", "@w1:hs"}
    assert [s.severity for s in d.mention_spam(CFG.mention_spam, c)] == ["warn"]
    no_body = d.parse_detector_config({"mention_spam": {"body_mentions": False}})
    assert d.mention_spam(no_body.mention_spam, c) == []
    # an email address is not a mention
    assert d.mentioned_users(ctx(content={"body": "a@b.example c@d.example"})) == set()


def test_body_mentions_are_counted_only_as_far_as_needed():
    many = " ".join(f"@u{i}:hs" for i in range(5000))
    users = d.mentioned_users(ctx(content={"body": many}), stop_above=10)
    assert len(users) == 11
    out = d.mention_spam(CFG.mention_spam, ctx(content={"body": many}))
    assert [s.severity for s in out] == ["block"]


def test_edits_count_their_new_mentions():
    content = {"body": "* x", "m.new_content": mentions(11)}
    assert [s.severity for s in d.mention_spam(CFG.mention_spam, ctx(content=content))] == ["block"]


# -- join wave ----------------------------------------------------------------------------------
def test_join_wave_cools_the_room_on_the_51st_join_in_an_hour():
    jc = CFG.join_wave
    j = member("join", joined=None)
    assert d.join_wave(jc, j, times(49, 60_000)) == []
    assert d.join_wave(jc, j, times(50, 60_000)[1:]) == []  # the 50th
    out = d.join_wave(jc, j, times(50, 60_000))  # the 51st
    assert [(s.severity, s.action) for s in out] == [("warn", "cool_room")]
    assert out[0].evidence["until_ms"] == NOW + 3600 * 1000
    assert combine(out).actions == ("cool_room",)


# -- invite fan-out --------------------------------------------------------------------------
def invite(target: str, **kw: Any) -> EventContext:
    return member("invite", sender="@inviter:hs", target=target, **kw)


def test_invite_fanout_counts_distinct_invitees():
    ic = CFG.invite_fanout
    ten = [f"@t{i}:hs" for i in range(10)]
    assert d.invite_fanout(ic, invite("@t0:hs"), ten, new_account=False) == []  # no new one
    out = d.invite_fanout(ic, invite("@x:hs"), ten, new_account=False)  # the 11th
    assert [s.severity for s in out] == ["warn"]
    many = [f"@t{i}:hs" for i in range(25)]
    assert [s.severity for s in d.invite_fanout(ic, invite("@x:hs"), many[:24],
                                                new_account=False)] == ["warn"]  # fmt: skip
    assert [s.severity for s in d.invite_fanout(ic, invite("@x:hs"), many,
                                                new_account=False)] == ["block"]  # fmt: skip


def test_invite_fanout_is_stricter_for_new_accounts():
    ic = CFG.invite_fanout
    five = [f"@t{i}:hs" for i in range(5)]
    assert d.invite_fanout(ic, invite("@x:hs"), five[:4], new_account=True) == []
    out = d.invite_fanout(ic, invite("@x:hs"), five, new_account=True)  # the 6th
    assert [s.severity for s in out] == ["block"] and out[0].evidence["new_account"]


# -- membership churn ----------------------------------------------------------------------------
def test_churn_warns_on_the_third_join_in_an_hour_and_blocks_the_fifth():
    cc = CFG.membership_churn
    assert d.membership_churn(cc, member("join"), times(1)) == []
    assert [s.severity for s in d.membership_churn(cc, member("join"), times(2))] == ["warn"]
    assert [s.severity for s in d.membership_churn(cc, member("join"), times(3))] == ["warn"]
    assert [s.severity for s in d.membership_churn(cc, member("join"), times(4))] == ["block"]
    assert [s.severity for s in d.membership_churn(cc, member("knock"), times(4))] == ["block"]
    # leaving is never refused (nor counted)
    assert d.membership_churn(cc, member("leave"), times(20)) == []


# -- first message -------------------------------------------------------------------------------
LINK = {"msgtype": "m.text", "body": "free coins at https://coins.example/claim now"}
IMAGE = {"msgtype": "m.image", "body": "x.png", "url": "mxc://hs/abc"}


def test_first_message_link_or_media_after_a_recent_join():
    fc = CFG.first_message
    new = ctx(content=LINK, created=NOW - 3600_000)
    assert [s.severity for s in d.first_message(fc, new, first=True, new_account=True)] == ["hold"]
    old = ctx(content=IMAGE)
    assert [s.severity for s in d.first_message(fc, old, first=True, new_account=False)] == ["info"]
    assert d.first_message(fc, new, first=False, new_account=True) == []  # not the first
    long_ago = ctx(content=LINK, joined=NOW - DAY)  # joined a day ago: no longer new
    assert d.first_message(fc, long_ago, first=True, new_account=True) == []
    plain = ctx(content={"msgtype": "m.text", "body": "hello, see file.py"})
    assert d.first_message(fc, plain, first=True, new_account=True) == []


def test_matrix_identifiers_are_not_links():
    c = ctx(
        content={
            "msgtype": "m.text",
            "body": "ask @alice:a.example in #help:b.example or https://matrix.to/#/x",
        }
    )
    assert d.has_link(c) == []  # fmt: skip
    assert d.has_link(ctx(content=LINK)) == ["https://coins.example/claim"]
    # a long body is searched at its start and its end (bounded cost)
    pad = "word " * 2000
    assert d.has_link(ctx(content={"body": pad + LINK["body"]}))
    assert d.has_link(ctx(content={"body": LINK["body"] + pad}))
    assert d.has_link(ctx(content={"body": pad + LINK["body"] + pad})) == []


# -- link blast --------------------------------------------------------------------------------
def test_link_blast_from_a_new_account():
    lc = CFG.link_blast
    assert d.link_blast(lc, ctx(content=LINK), [], links=1, new_account=True) == []
    out = d.link_blast(lc, ctx(content=LINK), times(1), links=1, new_account=True)  # the 2nd
    assert [s.severity for s in out] == ["hold"]
    assert d.link_blast(lc, ctx(content=LINK), times(5), links=1, new_account=False) == []
    assert d.link_blast(lc, ctx(), times(5), links=0, new_account=True) == []
    blocking = d.parse_detector_config({"link_blast": {"severity": "block", "block_above": 3}})
    assert d.link_blast(blocking.link_blast, ctx(), times(2), links=1, new_account=True) == []
    assert [s.severity for s in d.link_blast(blocking.link_blast, ctx(), times(3), links=1,
                                             new_account=True)] == ["block"]  # fmt: skip


# -- density and length --------------------------------------------------------------------------
def test_density_outlier_policyserv_rule():
    dc = CFG.density
    dense = "x" * 150
    assert [s.severity for s in d.density_outlier(dc, ctx(content={"body": dense}))] == ["warn"]
    assert d.density_outlier(dc, ctx(content={"body": "x" * 149})) == []  # too short
    spaced = ("x" * 18 + " ") * 10  # density 0.947
    assert d.density_outlier(dc, ctx(content={"body": spaced})) == []


def test_length_outliers():
    lc = CFG.length
    assert [s.severity for s in d.length_outlier(lc, ctx(content={"body": "a " * 5001}), [])] == [
        "warn"
    ]
    assert d.length_outlier(lc, ctx(content={"body": "a" * 10_000}), []) == []
    recent = [40] * 20
    out = d.length_outlier(lc, ctx(content={"body": "a " * 500}), recent)  # 1000 = 25 × 40
    assert [s.severity for s in out] == ["info"]
    assert d.length_outlier(lc, ctx(content={"body": "a " * 500}), recent[:19]) == []
    assert d.length_outlier(lc, ctx(content={"body": "a " * 350}), [10] * 20) == []  # < 1000


# -- origin flood --------------------------------------------------------------------------------
def test_origin_flood_only_for_federated_events():
    oc = CFG.origin_flood
    remote = ctx(local=False, origin="spam.example", sender="@a:spam.example")
    assert d.origin_flood(oc, remote, times(99, 100), 30) == []
    out = d.origin_flood(oc, remote, times(100, 100), 30)
    assert [s.severity for s in out] == ["warn"] and out[0].evidence["senders"] == 30
    assert d.origin_flood(oc, ctx(), times(100, 100), 1) == []


# -- encrypted rooms -------------------------------------------------------------------------------
class Sealed(Mapping[str, Any]):
    """Content nobody may read, except a member event's ``membership`` (metadata the server
    needs for the auth rules)."""

    def __init__(self, membership: str | None = None) -> None:
        self.membership = membership

    def __getitem__(self, key: str) -> Any:
        if key == "membership" and self.membership is not None:
            return self.membership
        raise AssertionError(f"an encrypted room's content was read ({key!r})")

    def get(self, key: str, default: Any = None) -> Any:
        return self[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("an encrypted room's content was listed")

    def __len__(self) -> int:
        raise AssertionError("an encrypted room's content was measured")

    def __contains__(self, key: object) -> bool:
        raise AssertionError("an encrypted room's content was searched")


def test_encrypted_rooms_are_never_read():
    for etype in ("m.room.encrypted", "m.room.message"):
        c = ctx(etype, Sealed(), encrypted=True, created=NOW - 60_000, joined=NOW - 60_000)
        assert not c.readable
        assert d.mention_spam(CFG.mention_spam, c) == []
        assert d.mentioned_users(c) == frozenset()
        assert d.first_message(CFG.first_message, c, first=True, new_account=True) == []
        assert d.has_link(c) == [] and not d.is_media(c) and d.body_text(c) == ""
        assert d.density_outlier(CFG.density, c) == []
        assert d.length_outlier(CFG.length, c, [1] * 50) == []
        # counts still work there
        assert d.message_flood(CFG.message_flood, c, times(10)).signals
    j = ctx("m.room.member", Sealed("join"), state_key="@spam:hs", encrypted=True, joined=None)
    assert d.join_wave(CFG.join_wave, j, times(50))
    assert d.membership_churn(CFG.membership_churn, j, times(4))


def test_the_toml_file_sets_the_detectors(tmp_path):
    from bastion.config import ConfigError, load_config

    path = tmp_path / "bastion.toml"
    path.write_text(
        'server_name = "example.org"\n'
        f'data_dir = "{tmp_path}"\n'
        "[guard.detectors.message_flood]\nwarn_above = 5\n"
        "[guard.detectors.join_wave]\nmax_joins = 20\ncooling_seconds = 600\n"
    )
    cfg = load_config(path).guard_config.detectors
    assert cfg.message_flood.warn_above == 5 and cfg.message_flood.throttle_above == 60
    assert (cfg.join_wave.max_joins, cfg.join_wave.cooling_s) == (20, 600)
    path.write_text(
        'server_name = "example.org"\n'
        f'data_dir = "{tmp_path}"\n'
        "[guard.detectors.join_wave]\nmax_join = 20\n"
    )
    with pytest.raises(ConfigError, match=r"guard\.detectors\.join_wave"):
        load_config(path).validate()  # checked at load, before the server starts
