"""The detectors' shell (bastion.guard.behaviour.Detectors): windows per user+room, room, user
and origin; exempt users; per-room switches; the flood throttle (429, its start recorded once);
bounded memory; the cost of one call."""

from __future__ import annotations

import asyncio
import statistics
import time
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.errors import MatrixError
from bastion.guard import detectors as d
from bastion.guard.behaviour import Detectors, Windows
from bastion.guard.signals import EventContext

NOW = 1_800_000_000_000
DAY = 86_400_000


class FakeGuard:
    def __init__(self) -> None:
        self.exempt: set[str] = set()
        self.settings: dict[str, dict[str, Any]] = {}
        self.recorded: list[Any] = []
        self.limits = SimpleNamespace(is_exempt=lambda u: u in self.exempt)

    def room_settings(self, room_id: str) -> dict[str, Any]:
        return self.settings.get(room_id, {})

    async def record(self, decision: Any) -> int:
        self.recorded.append(decision)
        return len(self.recorded)


def detectors(
    table: dict[str, Any] | None = None, mode: str = "enforce", rate_limits: bool = True
) -> Detectors:
    cfg = d.parse_detector_config(table or {})
    guard_config = SimpleNamespace(
        detectors=cfg, mode=mode, rate_limits=SimpleNamespace(enabled=rate_limits)
    )
    hs = SimpleNamespace(config=SimpleNamespace(guard_config=guard_config), guard=FakeGuard())
    return Detectors(hs)  # type: ignore[arg-type]


def msg(now: int, *, sender: str = "@f:hs", room: str = "!r:hs", body: str = "hi",
        local: bool = True, origin: str = "hs", encrypted: bool = False,
        created: int | None = NOW - 30 * DAY, joined: int | None = NOW - DAY // 2,
        etype: str = "m.room.message") -> EventContext:  # fmt: skip
    return EventContext(sender, room, etype, {"msgtype": "m.text", "body": body}, None, now,
                        local, origin, encrypted_room=encrypted, sender_created_ms=created,
                        sender_joined_ms=joined)  # fmt: skip


def join(now: int, user: str, room: str = "!r:hs", *, joined: int | None = None,
         membership: str = "join") -> EventContext:  # fmt: skip
    return EventContext(user, room, "m.room.member", {"membership": membership}, user, now,
                        True, "hs", sender_joined_ms=joined)  # fmt: skip


def sources(sigs) -> list[tuple[str, str]]:
    return [(s.source, s.severity) for s in sigs]


def test_flood_window_per_user_and_room():
    det = detectors()
    for i in range(10):
        assert det.signals(msg(NOW + i * 100)) == []
    assert sources(det.signals(msg(NOW + 1000))) == [("detector.message_flood", "warn")]
    assert det.signals(msg(NOW + 1100)) == []  # the same episode: said once
    # another room, another user: their own windows
    assert det.signals(msg(NOW + 1200, room="!other:hs")) == []
    assert det.signals(msg(NOW + 1300, sender="@g:hs")) == []
    # a minute later the window has emptied
    later = NOW + 1300 + 60_000
    assert det.signals(msg(later)) == []


def test_flood_throttle_is_a_429_and_its_start_is_recorded_once():
    async def run() -> tuple[Detectors, list[int]]:
        det = detectors()
        for i in range(60):
            det.signals(msg(NOW + i * 500))
        retries = []
        for i in range(3):
            with pytest.raises(MatrixError) as e:
                det.signals(msg(NOW + 30_000 + i))
            assert e.value.status == 429 and e.value.errcode == "M_LIMIT_EXCEEDED"
            retries.append(e.value.extra["retry_after_ms"])
        await asyncio.sleep(0)
        # once the oldest message left the window, the next one passes (and lifts the throttle)
        assert det.signals(msg(NOW + 60_001)) == []
        assert not det.throttled
        return det, retries

    det, retries = asyncio.run(run())
    assert retries == [30_000, 29_999, 29_998]
    recorded = det.hs.guard.recorded
    assert len(recorded) == 1
    assert recorded[0].source == "detector.message_flood" and recorded[0].outcome == "block"
    assert recorded[0].details["throttle"] is True


def test_lifted_rate_limits_lift_the_flood_throttle_but_not_the_warning():
    det = detectors(rate_limits=False)
    out = [sources(det.signals(msg(NOW + i * 100))) for i in range(80)]
    assert out[10] == [("detector.message_flood", "warn")]
    assert all(o == [] for i, o in enumerate(out) if i != 10)  # never a 429
    assert not det.throttled and det.hs.guard.recorded == []


def test_shadow_mode_only_records_the_throttle():
    det = detectors(mode="shadow")
    for i in range(60):
        det.signals(msg(NOW + i * 500))
    out = [sources(det.signals(msg(NOW + 30_000 + i))) for i in range(3)]
    assert out == [[("detector.message_flood", "block")], [], []]
    assert det.hs.guard.recorded == []  # the guard records the shadow verdict itself


def test_federated_floods_are_not_throttled_but_origins_are_watched():
    det = detectors({"origin_flood": {"warn_above": 5}})
    out = []
    for i in range(30):
        out += det.signals(msg(NOW + i, sender=f"@s{i % 3}:spam.example", local=False,
                               origin="spam.example"))  # fmt: skip
    assert sources(out) == [("detector.origin_flood", "warn")]
    assert out[0].evidence["senders"] == 3


def test_exempt_users_are_not_observed():
    det = detectors()
    det.hs.guard.exempt.add("@bot:hs")
    for i in range(50):
        assert det.signals(msg(NOW + i, sender="@bot:hs")) == []
    assert det.messages.peek(("!r:hs", "@bot:hs")) is None


def test_room_switches():
    det = detectors()
    det.hs.guard.settings["!quiet:hs"] = {"detectors": {"enabled": False}}
    det.hs.guard.settings["!noflood:hs"] = {"detectors": {"message_flood": False}}
    for room in ("!quiet:hs", "!noflood:hs"):
        for i in range(30):
            assert det.signals(msg(NOW + i, room=room)) == []
    mentions = " ".join(f"@u{i}:hs" for i in range(5))
    assert det.signals(msg(NOW, room="!quiet:hs", body=mentions)) == []
    assert sources(det.signals(msg(NOW, room="!noflood:hs", body=mentions))) == [
        ("detector.mention_spam", "warn")
    ]


def test_changed_room_switches_take_effect_at_once():
    # The switches are kept per settings object; new settings (a new object, as the guard
    # makes when an admin changes them) are read again.
    det = detectors()
    mentions = " ".join(f"@u{i}:hs" for i in range(5))
    det.hs.guard.settings["!r:hs"] = {"detectors": {"enabled": False}}
    assert det.signals(msg(NOW, body=mentions)) == []
    det.hs.guard.settings["!r:hs"] = {"detectors": {"message_flood": False}}
    assert sources(det.signals(msg(NOW + 1, body=mentions))) == [("detector.mention_spam", "warn")]
    det.hs.guard.settings["!r:hs"] = {"detectors": {"mention_spam": False}}
    assert det.signals(msg(NOW + 2, body=mentions)) == []


def test_join_wave_fires_once_then_counting_restarts():
    det = detectors()
    out = []
    for i in range(51):
        out += det.signals(join(NOW + i * 1000, f"@j{i}:hs"))
    assert [(s.source, s.action) for s in out] == [("detector.join_wave", "cool_room")]
    assert out[0].evidence["joins"] == 51
    for i in range(50):
        assert det.signals(join(NOW + 60_000 + i, f"@k{i}:hs")) == []
    # a profile change of a joined member is not a join
    for i in range(60):
        assert det.signals(join(NOW + 70_000 + i, f"@k{i % 5}:hs", joined=NOW)) == []


def test_churn_counts_rejoins_of_one_room():
    det = detectors()
    severities = []
    for i in range(6):
        severities.append([s.severity for s in det.signals(join(NOW + i * 1000, "@c:hs"))])
        det.signals(join(NOW + i * 1000 + 500, "@c:hs", membership="leave"))
    assert severities == [[], [], ["warn"], ["warn"], ["block"], ["block"]]


def test_invite_fanout_per_sender_across_rooms():
    det = detectors()

    def invite(i: int, room: str) -> list[str]:
        ctx = EventContext("@inv:hs", room, "m.room.member", {"membership": "invite"},
                           f"@t{i}:hs", NOW + i, True, "hs",
                           sender_created_ms=NOW - 3600_000)  # fmt: skip
        return [s.severity for s in det.signals(ctx)]

    got = [invite(i, f"!r{i % 3}:hs") for i in range(8)]
    assert got == [[], [], [], [], [], ["block"], ["block"], ["block"]]
    # the refused ones were not counted: the window holds the 5 that were sent
    assert len(det.invites.peek("@inv:hs") or ()) == 5


def test_first_message_and_link_blast_from_a_new_account():
    det = detectors()
    new = NOW - 3600_000
    link = "join https://coins.example/now"
    first = det.signals(msg(NOW, body=link, created=new))
    assert sources(first) == [("detector.first_message", "hold")]
    assert det.signals(msg(NOW + 1, body="hello", created=new)) == []  # no link: fine
    assert sources(det.signals(msg(NOW + 2, body=link, created=new))) == [
        ("detector.link_blast", "hold")
    ]
    # after a new join, the first message is first again
    again = det.signals(msg(NOW + 3, body=link, created=new, joined=NOW + 3, room="!b:hs"))
    assert ("detector.first_message", "hold") in sources(again)
    # an older account: the first message's link is only evidence, and there is no blast
    old = [sources(det.signals(msg(NOW + 10 + i, body=link, sender="@old:hs"))) for i in range(3)]
    assert old == [[("detector.first_message", "info")], [], []]


def test_encrypted_rooms_only_counts():
    det = detectors()
    out = []
    for i in range(11):
        out += det.signals(msg(NOW + i, etype="m.room.encrypted", encrypted=True,
                               body="@a:hs @b:hs @c:hs @d:hs https://x.example",
                               created=NOW - 1000, joined=NOW - 1000))  # fmt: skip
    assert sources(out) == [("detector.message_flood", "warn")]
    assert det.lengths.peek("!r:hs") is None  # no body was measured


def test_windows_are_bounded():
    w: Windows[str, int] = Windows(3, max_keys=100)
    for i in range(1000):
        w.get(f"k{i}").extend(range(10))
    assert len(w) == 100 and len(w.get("k999")) == 3
    det = detectors()
    for i in range(2000):
        det.signals(msg(NOW + i, sender=f"@u{i}:hs"))
    assert len(det.messages) == 2000  # under MAX_KEYS
    det.messages.max_keys = 500
    for i in range(2000):
        det.signals(msg(NOW + 5000 + i, sender=f"@v{i}:hs"))
    assert len(det.messages) == 500


def test_cost_per_call():
    """The issue's budget is p99 <= 5 ms per whole guard decision; the detectors take a small
    part of it. Printed: median and p99 in microseconds for a plain message, a message with
    mentions and a link, and a join."""
    det = detectors()
    body = "hey @a:hs and @b:hs, look at https://example.org/page and tell me what you think"
    cases = {
        "plain": lambda i: msg(NOW + i * 10, sender=f"@u{i % 500}:hs", room=f"!r{i % 50}:hs"),
        "mentions+link": lambda i: msg(NOW + i * 10, sender=f"@u{i % 500}:hs",
                                       room=f"!r{i % 50}:hs", body=body),
        "join": lambda i: join(NOW + i * 10, f"@j{i}:hs", f"!r{i % 50}:hs"),
    }  # fmt: skip
    report = {}
    for name, make in cases.items():
        ctxs = [make(i) for i in range(5000)]
        samples = []
        for c in ctxs:
            t0 = time.perf_counter_ns()
            det.signals(c)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        samples.sort()
        report[name] = (statistics.median(samples), samples[int(len(samples) * 0.99)])
    print("detectors cost (median µs, p99 µs):",
          {k: (round(a, 1), round(b, 1)) for k, (a, b) in report.items()})  # fmt: skip
    for median, p99 in report.values():
        assert median < 200 and p99 < 5000  # the whole guard's budget is p99 <= 5 ms


def test_hostile_long_bodies_stay_cheap():
    """64 KiB bodies full of links, dots and user IDs: searched within bounds (the median call
    stays far under the guard's 5 ms budget)."""
    det = detectors()
    bodies = [("www.a.com/x " * 6000)[:64000], ("foo.bar baz. @a:hs " * 4000)[:64000],
              " ".join(f"@u{i}:hs" for i in range(9000))[:64000]]  # fmt: skip
    for body in bodies:
        samples = []
        for i in range(30):
            c = msg(NOW + i, sender=f"@n{i}:hs", body=body, created=NOW - 1000, joined=NOW - 1000)
            t0 = time.perf_counter_ns()
            det.signals(c)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        assert statistics.median(samples) < 3.0, samples
