"""Redactions received over federation are applied (rooms v3+ "Handling redactions"): the
receiving server stores the target in its redacted form, serves it so, takes it out of the
search index, and its ledger still verifies (a redaction in the ledger accounts for the
removed content)."""

from __future__ import annotations

import json
from pathlib import Path

from bastion.cli import main
from tests.support import server_pair
from tests.support.harness import Client
from tests.support.ledger import wait_covered
from tests.support.peer import on_server
from tests.support.server_pair import V3, q, shared_room, wait_for

pair = server_pair.pair  # the fixture

SECRET = "federated-secret-words-6631"


def test_a_remote_users_redaction_of_their_own_message_is_applied(pair, capsys):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    room_id = shared_room(alice, bob)
    r = bob.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/t1",
                    {"msgtype": "m.text", "body": SECRET})  # fmt: skip
    assert r.status == 200, r.body
    event_id = r.body["event_id"]
    wait_for(lambda: on_server(a, lambda: a.hs.store.get_event_row(event_id)) is not None)
    r = alice.request("GET", f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")
    assert r.status == 200 and r.body["content"]["body"] == SECRET, r.body
    r = alice.request("POST", "/_matrix/client/v3/search",
                      {"search_categories": {"room_events": {"search_term": SECRET}}})  # fmt: skip
    assert r.status == 200 and r.body["search_categories"]["room_events"]["count"] == 1, r.body

    r = bob.request("PUT", f"{V3}/rooms/{q(room_id)}/redact/{q(event_id)}/r1", {"reason": "oops"})
    assert r.status == 200, r.body
    redaction_id = r.body["event_id"]

    def redacted_on_a() -> bool:
        row = on_server(a, lambda: a.hs.store.get_event_row(event_id))
        return row is not None and row.redacted_because == redaction_id

    wait_for(redacted_on_a)
    r = alice.request("GET", f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")
    assert r.status == 200 and r.body["content"] == {}, r.body
    r = alice.request("POST", "/_matrix/client/v3/search",
                      {"search_categories": {"room_events": {"search_term": SECRET}}})  # fmt: skip
    assert r.status == 200 and r.body["search_categories"]["room_events"]["count"] == 0, r.body
    wait_covered(a)
    capsys.readouterr()
    main(["ledger", "verify", "--data-dir", str(Path(a.config.data_dir)), "--json"])
    report = json.loads(capsys.readouterr().out)
    # (This test server's data directory has no bastion.toml naming its server, so the
    # checkpoints' origin is not checked here; every event leaf is.)
    about_events = [f for f in report["findings"] if f["table"] == "events"]
    assert about_events == [], about_events
    assert report["stats"]["events"] > 0
