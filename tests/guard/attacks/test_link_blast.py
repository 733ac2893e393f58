"""Attack: a new account joins a room and posts links (issue 9, "a link blast from a new
account").

At the defaults the account's first message after joining, a link, is held for a moderator
(403 ``M_FORBIDDEN`` saying so, the decision ``held``); a plain message goes through; its next
link within 10 minutes is held too (the link-blast rule). Configured to ``block``, that second
link is refused outright. The room's members never see the links and keep talking.
"""

from __future__ import annotations

from tests.guard.attacks.victims import Told, victims_still_talk
from tests.guard.core_support import V3, create_room, decisions, q, send
from tests.support.accounts import make_user
from tests.support.harness import ServerThread

LINK = "great offer, see https://offers.example/claim?id=1"


def start(tmp_path, guard=None) -> ServerThread:
    return ServerThread(tmp_path / "data", **({"guard": guard} if guard else {})).start()


def sources(decision: dict) -> list[str]:
    return [s["source"] for s in decision["signals"]]


def setup(srv: ServerThread):
    Told(srv)
    owner, member, spammer = make_user(srv), make_user(srv), make_user(srv)
    room_id = create_room(owner, preset="public_chat")
    for c in (member, spammer):
        assert c.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 200
    return owner, member, spammer, room_id


def test_link_blast_is_held(tmp_path):
    srv = start(tmp_path)
    try:
        owner, member, spammer, room_id = setup(srv)
        first = send(spammer, room_id, LINK)
        assert first.status == 403 and "held for review" in first.body["error"]
        assert send(spammer, room_id, "hello everyone").status == 200
        second = send(spammer, room_id, LINK.replace("1", "2"))
        assert second.status == 403 and "held for review" in second.body["error"]
        held = decisions(srv, subject=spammer.user_id, status="held")
        assert len(held) == 2
        assert {"detector.first_message", "detector.link_blast"} <= {
            s for x in held for s in sources(x)}  # fmt: skip
        seen = victims_still_talk(room_id, owner, member)
        assert "hello everyone" in seen and not any("offers.example" in b for b in seen)
    finally:
        srv.stop()


def test_link_blast_blocked_per_config(tmp_path):
    srv = start(tmp_path, {"detectors": {"link_blast": {"severity": "block"}}})
    try:
        owner, member, spammer, room_id = setup(srv)
        assert send(spammer, room_id, "hi").status == 200  # the first message: no link
        assert send(spammer, room_id, LINK).status == 200  # one link is allowed
        r = send(spammer, room_id, LINK.replace("1", "2"))
        assert r.status == 403 and "refused by the server's guard" in r.body["error"]
        blocked = [x for x in decisions(srv, subject=spammer.user_id)
                   if "detector.link_blast" in sources(x)]  # fmt: skip
        assert len(blocked) == 1 and blocked[0]["outcome"] == "block"
        seen = victims_still_talk(room_id, owner, member)
        assert sum("offers.example" in b for b in seen) == 1
    finally:
        srv.stop()
