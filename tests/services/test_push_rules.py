"""Push rules (C-S API "Push Rules", "Predefined Rules", "Push Rules: API")."""

from __future__ import annotations

import pytest

from bastion.errors import MatrixError
from bastion.services import push_rules as pr
from bastion.services.filtering import parse_filter
from bastion.services.sync_api import SyncContext, SyncToken
from bastion.storage.sqlite.accounts import Requester
from tests.support.accounts import call_on_server, make_user

BASE = "/_matrix/client/v3/pushrules"


# -- pure functions -------------------------------------------------------------------------


def test_default_ruleset_shape():
    rs = pr.effective_ruleset("@a:x", pr.empty_document())
    assert set(rs) == {"override", "content", "room", "sender", "underride"}
    ids = [r["rule_id"] for r in rs["override"]]
    assert ids == [
        ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me",
        ".m.rule.member_event", ".m.rule.is_user_mention", ".m.rule.is_room_mention",
        ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ]  # fmt: skip
    assert [r["rule_id"] for r in rs["underride"]] == [
        ".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
        ".m.rule.message", ".m.rule.encrypted",
    ]  # fmt: skip
    assert rs["content"] == [] and rs["room"] == [] and rs["sender"] == []
    master = rs["override"][0]
    assert master == {"rule_id": ".m.rule.master", "default": True, "enabled": False,
                      "actions": [], "conditions": []}  # fmt: skip
    invite = next(r for r in rs["override"] if r["rule_id"] == ".m.rule.invite_for_me")
    assert {"kind": "event_match", "key": "state_key", "pattern": "@a:x"} in invite["conditions"]
    mention = next(r for r in rs["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"][0]["value"] == "@a:x"
    assert all(r["default"] and "rule_id" in r and "actions" in r for k in rs for r in rs[k])


def test_user_rules_rank_between_master_and_defaults():
    doc = pr.put_rule(pr.empty_document(), "override", "mine", {"actions": [], "conditions": []},
                      None, None)  # fmt: skip
    doc = pr.put_rule(doc, "underride", "low", {"actions": ["notify"]}, None, None)
    rs = pr.effective_ruleset("@a:x", doc)
    assert [r["rule_id"] for r in rs["override"]][:3] == [
        ".m.rule.master",
        "mine",
        ".m.rule.suppress_notices",
    ]
    assert rs["override"][1]["default"] is False and rs["override"][1]["enabled"] is True
    assert rs["underride"][0]["rule_id"] == "low"


def test_before_after_ordering():
    doc = pr.empty_document()
    for rid in ("a", "b", "c"):  # each new rule goes first: c, b, a
        doc = pr.put_rule(doc, "content", rid, {"actions": ["notify"], "pattern": rid}, None, None)
    order = lambda d: [r["rule_id"] for r in d["user"]["content"]]  # noqa: E731
    assert order(doc) == ["c", "b", "a"]
    doc = pr.put_rule(doc, "content", "d", {"actions": [], "pattern": "d"}, None, "a")
    assert order(doc) == ["c", "b", "a", "d"]
    doc = pr.put_rule(doc, "content", "e", {"actions": [], "pattern": "e"}, "b", None)
    assert order(doc) == ["c", "e", "b", "a", "d"]
    # before wins over after; moving an existing rule
    doc = pr.put_rule(doc, "content", "d", {"actions": [], "pattern": "d"}, "c", "a")
    assert order(doc) == ["d", "c", "e", "b", "a"]
    # updating in place keeps the position
    doc = pr.put_rule(doc, "content", "b", {"actions": ["notify"], "pattern": "bb"}, None, None)
    assert order(doc) == ["d", "c", "e", "b", "a"]
    assert doc["user"]["content"][3]["pattern"] == "bb"
    for anchor in ("nope", ".m.rule.master", "d"):
        with pytest.raises(MatrixError) as ei:
            pr.put_rule(doc, "content", "d", {"actions": [], "pattern": "d"}, anchor, None)
        assert ei.value.status == 400


def test_validation():
    def put(kind, rid, body):
        return pr.put_rule(pr.empty_document(), kind, rid, body, None, None)

    bad = [
        ("override", ".mine", {"actions": []}),
        ("override", "a/b", {"actions": []}),
        ("override", "a\\b", {"actions": []}),
        ("override", "", {"actions": []}),
        ("bogus", "x", {"actions": []}),
        ("override", "x", {}),
        ("override", "x", {"actions": "notify"}),
        ("override", "x", {"actions": ["explode"]}),
        ("override", "x", {"actions": [{"no_tweak": 1}]}),
        ("override", "x", {"actions": [{"set_tweak": "highlight", "value": "yes"}]}),
        ("override", "x", {"actions": [{"set_tweak": "sound"}]}),
        ("override", "x", {"actions": [3]}),
        ("override", "x", {"actions": [], "conditions": {}}),
        ("override", "x", {"actions": [], "conditions": ["c"]}),
        ("override", "x", {"actions": [], "conditions": [{"key": "type"}]}),
        ("override", "x", {"actions": [], "conditions": [{"kind": "event_match", "key": "t"}]}),
        ("override", "x", {"actions": [], "conditions": [{"kind": "room_member_count",
                                                           "is": "two"}]}),
        ("override", "x", {"actions": [], "conditions": [{"kind": "event_property_is",
                                                           "key": "a", "value": [1]}]}),
        ("content", "x", {"actions": []}),
        ("content", "x", {"actions": [], "pattern": 5}),
        ("room", "not-a-room", {"actions": []}),
        ("sender", "not-a-user", {"actions": []}),
    ]  # fmt: skip
    for kind, rid, body in bad:
        with pytest.raises(MatrixError) as ei:
            put(kind, rid, body)
        assert ei.value.status == 400, (kind, rid, body)
    # historical actions are stripped; unknown condition kinds are kept (they never match)
    doc = put("override", "x", {"actions": ["dont_notify", "coalesce"],
                                "conditions": [{"kind": "org.example.future"}]})  # fmt: skip
    assert doc["user"]["override"][0]["actions"] == []
    doc = put("room", "!r:x", {"actions": ["notify"]})
    assert doc["user"]["room"][0]["rule_id"] == "!r:x"


# -- endpoints ------------------------------------------------------------------------------


def test_get_rules_with_and_without_trailing_slash(server, client):
    alice = make_user(server)
    r = alice.request("GET", BASE + "/")
    assert r.status == 200
    assert r.body["global"]["override"][0]["rule_id"] == ".m.rule.master"
    assert alice.request("GET", BASE).body == r.body
    g = alice.request("GET", BASE + "/global/")
    assert g.status == 200 and g.body == r.body["global"]
    assert alice.request("GET", BASE + "/global").body == g.body
    k = alice.request("GET", BASE + "/global/underride/")
    assert k.status == 200 and k.body == g.body["underride"]
    r = alice.request("GET", BASE + "/global/override/.m.rule.master")
    assert r.status == 200 and r.body["enabled"] is False and r.body["default"] is True
    r = client.request("GET", BASE + "/", token=None)
    assert r.status == 401


def test_rule_lifecycle(server):
    alice = make_user(server)
    path = BASE + "/global/content/cake"
    r = alice.request("PUT", path, {"pattern": "cake*lie", "actions": ["notify"]})
    assert r.status == 200 and r.body == {}
    r = alice.request("GET", path)
    assert r.body == {"rule_id": "cake", "default": False, "enabled": True,
                      "actions": ["notify"], "pattern": "cake*lie"}  # fmt: skip
    assert alice.request("GET", path + "/enabled").body == {"enabled": True}
    assert alice.request("PUT", path + "/enabled", {"enabled": False}).status == 200
    assert alice.request("GET", path + "/enabled").body == {"enabled": False}
    # an update keeps the enabled state
    alice.request("PUT", path, {"pattern": "cake", "actions": []})
    assert alice.request("GET", path).body["enabled"] is False
    acts = ["notify", {"set_tweak": "sound", "value": "default"}]
    assert alice.request("PUT", path + "/actions", {"actions": acts}).status == 200
    assert alice.request("GET", path + "/actions").body == {"actions": acts}
    # ordering through the API
    r = alice.request("PUT", BASE + "/global/content/pie", {"pattern": "pie", "actions": []},
                      query={"after": "cake"})  # fmt: skip
    assert r.status == 200
    ids = [x["rule_id"] for x in alice.request("GET", BASE + "/global/").body["content"]]
    assert ids == ["cake", "pie"]
    r = alice.request("PUT", BASE + "/global/content/tea", {"pattern": "t", "actions": []},
                      query={"before": "nope"})  # fmt: skip
    assert r.status == 400
    assert alice.request("DELETE", path).status == 200
    r = alice.request("GET", path)
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("DELETE", path)
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"


def test_default_rules_can_be_toggled_not_deleted(server):
    alice = make_user(server)
    master = BASE + "/global/override/.m.rule.master"
    assert alice.request("PUT", master + "/enabled", {"enabled": True}).status == 200
    assert alice.request("GET", master).body["enabled"] is True
    msg = BASE + "/global/underride/.m.rule.message"
    assert alice.request("PUT", msg + "/actions", {"actions": []}).status == 200
    assert alice.request("GET", msg + "/actions").body == {"actions": []}
    r = alice.request("DELETE", master)
    assert r.status == 400
    r = alice.request("PUT", master, {"actions": []})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    # a default rule under the wrong kind does not exist
    r = alice.request("GET", BASE + "/global/content/.m.rule.master")
    assert r.status == 404


def test_push_rules_bad_input(server):
    alice = make_user(server)
    cases = [
        ("PUT", BASE + "/global/override/x", {"conditions": []}, 400),
        ("PUT", BASE + "/global/bogus/x", {"actions": []}, 400),
        ("PUT", BASE + "/device/override/x", {"actions": []}, 400),
        ("GET", BASE + "/global/bogus/x", None, 400),
        ("PUT", BASE + "/global/override/.m.rule.master/enabled", {"enabled": "yes"}, 400),
        ("PUT", BASE + "/global/override/.m.rule.master/enabled", {}, 400),
        ("PUT", BASE + "/global/override/.m.rule.master/actions", {"actions": "notify"}, 400),
        ("PUT", BASE + "/global/override/missing/enabled", {"enabled": True}, 404),
        ("GET", BASE + "/global/override/missing/actions", None, 404),
        ("PUT", BASE + "/global/room/x", {"actions": []}, 400),
    ]
    for method, path, body, status in cases:
        r = alice.request(method, path, body)
        assert r.status == status, (method, path, r.body)
        assert r.body["errcode"].startswith("M_")
    r = alice.request("PUT", BASE + "/global/override/x", raw=b"{bad")
    assert r.status == 400 and r.body["errcode"] == "M_NOT_JSON"


def test_rules_are_per_user(server):
    alice, bob = make_user(server), make_user(server)
    alice.request("PUT", BASE + "/global/sender/@spam:x", {"actions": []})
    assert alice.request("GET", BASE + "/global/sender/@spam:x").status == 200
    assert bob.request("GET", BASE + "/global/sender/@spam:x").status == 404
    assert bob.request("DELETE", BASE + "/global/sender/@spam:x").status == 404
    assert alice.request("GET", BASE + "/global/sender/@spam:x").status == 200


def _ctx(server, user, since=None):
    hs = server.hs
    return SyncContext(
        requester=Requester(user.user_id, user.device_id),
        since=since,
        upto=SyncToken(hs.store.current_pos, hs.typing.serial),
        filter=parse_filter({}),
    )


def test_push_rules_in_sync_account_data(server):
    """Push Rules: Events — m.push_rules in every initial sync, and incrementally on change."""
    alice = make_user(server)
    hs = server.hs

    def global_ad(ctx):
        resp: dict = {}
        hs.account_data.contribute_global(ctx, resp)
        return resp.get("account_data", {}).get("events", [])

    ctx = call_on_server(server, _ctx, server, alice)
    events = call_on_server(server, global_ad, ctx)
    push = [e for e in events if e["type"] == "m.push_rules"]
    assert len(push) == 1 and push[0]["content"]["global"]["override"][0]["enabled"] is False
    since = ctx.upto
    assert [e["type"] for e in call_on_server(server, global_ad, _ctx(server, alice, since))] == []
    alice.request("PUT", BASE + "/global/override/.m.rule.master/enabled", {"enabled": True})
    events = call_on_server(server, global_ad, call_on_server(server, _ctx, server, alice, since))
    assert [e["type"] for e in events] == ["m.push_rules"]
    assert events[0]["content"]["global"]["override"][0]["enabled"] is True
    # the same rules are readable as account data, but not writable
    r = alice.request("GET", f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.push_rules")
    assert r.status == 200 and r.body["global"]["override"][0]["enabled"] is True
    r = alice.request(
        "PUT", f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.push_rules", {}
    )
    assert r.status == 405 and r.body["errcode"] == "M_BAD_JSON"


def test_copy_room_rules_for_a_replacement_room():
    from bastion.services.push_rules import MAX_USER_RULES, copy_room_rules

    old, new = "!old:h", "!new:h"
    names_old = [{"kind": "event_match", "key": "room_id", "pattern": old}]
    doc = {"user": {
        "room": [{"rule_id": old, "actions": [], "enabled": False},
                 {"rule_id": "!else:h", "actions": []}],
        "override": [{"rule_id": f"x{old}", "conditions": names_old, "actions": ["notify"]},
                     # names the room in its conditions but not in its ID: cannot be copied
                     {"rule_id": "plain", "conditions": names_old, "actions": []},
                     # names it in its ID only: not a rule for the room
                     {"rule_id": f"y{old}", "conditions": [], "actions": []}],
        "underride": [{"rule_id": f"u{new}", "conditions": [], "actions": []},
                      {"rule_id": f"u{old}", "conditions": names_old, "actions": []}],
    }}  # fmt: skip
    out = copy_room_rules(doc, old, new)
    assert out is not None and doc["user"]["room"][0]["rule_id"] == old  # input untouched
    assert out["user"]["room"][0] == {"rule_id": new, "actions": [], "enabled": False}
    assert [r["rule_id"] for r in out["user"]["override"]] == [f"x{new}", f"x{old}", "plain",
                                                              f"y{old}"]  # fmt: skip
    assert out["user"]["override"][0]["conditions"][0]["pattern"] == new
    # A rule the user already has for the new room is kept as it is.
    assert [r["rule_id"] for r in out["user"]["underride"]] == [f"u{new}", f"u{old}"]
    # Copying again changes nothing; nothing to copy is None.
    assert copy_room_rules(out, old, new) is None
    assert copy_room_rules({"user": {}}, old, new) is None
    # Never past the limit of user rules.
    full = {"user": {"room": [{"rule_id": old, "actions": []}],
                     "override": [{"rule_id": f"r{i}", "actions": []}
                                  for i in range(MAX_USER_RULES - 1)]}}  # fmt: skip
    assert copy_room_rules(full, old, new) is None
