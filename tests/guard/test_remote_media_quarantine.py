"""The guard's ``quarantine_media`` action on other servers' media (issue 9 "Policy lists and
actions", with the remote media cache): an event linking another server's files gets them
quarantined, cached or not — not served to our users, the cached copy deleted, not fetched —
and a reversal releases them, fetched again on the next request."""

from __future__ import annotations

from tests.api.synapse_admin.test_remote_media import DATA, MEDIA, _asked, remote  # noqa: F401
from tests.guard.core_support import (
    GUARD,
    Scripted,
    block,
    create_room,
    decisions,
    q,
    script_detectors,
    send,
)
from tests.support.accounts import assert_error


def test_guard_quarantines_remote_media_until_reversed(remote):  # noqa: F811
    srv, peer, admin, bob = remote.srv, remote.peer, remote.admin, remote.bob
    script_detectors(srv, Scripted({"QUARANTINE": block("malware", "quarantine_media")}))
    origin = peer.server_name
    cat = f"{MEDIA}/download/{q(origin)}/cat"
    assert bob.request("GET", cat).body["_raw"] == DATA
    row = srv.hs.store.get_remote_media(origin, "cat")
    room_id = create_room(bob)
    links = {"url": f"mxc://{origin}/cat",
             "info": {"thumbnail_url": f"mxc://{origin}/catthumb"}}  # fmt: skip
    assert send(bob, room_id, "QUARANTINE", **links).status == 403
    assert_error(bob.request("GET", cat), 404, "M_NOT_FOUND")
    assert_error(bob.request("GET", f"{MEDIA}/download/{q(origin)}/catthumb"), 404, "M_NOT_FOUND")
    assert _asked(peer, "cat") == 1 and _asked(peer, "catthumb") == 0
    assert not (srv.hs.config.media_path / row["file_path"]).exists()
    (d,) = decisions(srv)
    done = d["details"]["carried_out"]["quarantine_media"]
    assert done["done"] is True and done["media_ids"] == []
    assert done["remote"] == [f"mxc://{origin}/cat", f"mxc://{origin}/catthumb"]
    q_row = srv.hs.store.remote_media_quarantine(origin, "cat")
    assert q_row["decision_id"] == d["id"] and "malware" in q_row["reason"]
    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/reverse", {})
    assert r.status == 200, r.body
    assert r.body["details"]["reversed"]["quarantine_media"]["remote"] == done["remote"]
    assert bob.request("GET", cat).body["_raw"] == DATA
    assert _asked(peer, "cat") == 2
