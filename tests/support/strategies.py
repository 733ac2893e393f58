"""Hypothesis strategies shared by the core tests: JSON values and events."""

from __future__ import annotations

from hypothesis import strategies as st

MAX_SAFE = 2**53 - 1

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE, max_value=MAX_SAFE)
    | st.text(max_size=20)
)

#: Canonical-JSON-encodable values (no floats, integers in range).
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

#: Any JSON-ish Python value, including what canonical JSON refuses (floats, big ints, ...).
any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

EVENT_TYPES = [
    "m.room.create",
    "m.room.member",
    "m.room.join_rules",
    "m.room.power_levels",
    "m.room.history_visibility",
    "m.room.aliases",
    "m.room.redaction",
    "m.room.message",
    "m.room.topic",
    "m.room.third_party_invite",
    "org.example.custom",
]

#: Content keys that some redaction rule keeps, to make the interesting cases common.
SPECIAL_CONTENT_KEYS = [
    "membership", "creator", "join_rule", "allow", "ban", "events", "events_default", "kick",
    "redact", "state_default", "users", "users_default", "invite", "notifications",
    "history_visibility", "aliases", "redacts", "join_authorised_via_users_server",
    "third_party_invite", "room_version", "additional_creators", "m.federate", "body",
]  # fmt: skip

TOP_LEVEL_EXTRA_KEYS = ["origin", "membership", "prev_state", "redacts", "foo", "outlier_x"]

server_names = st.sampled_from(["example.org", "a.example", "1.2.3.4:8448", "[::1]:80"])
localparts = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._=-/+", min_size=1, max_size=8)
user_ids = st.builds(lambda lp, s: f"@{lp}:{s}", localparts, server_names)
event_ids = st.builds(
    lambda s: "$" + s,
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        min_size=43,
        max_size=43,
    ),
)


@st.composite
def contents(draw):
    content = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3))
    for key in draw(st.lists(st.sampled_from(SPECIAL_CONTENT_KEYS), max_size=5, unique=True)):
        if key == "third_party_invite":
            content[key] = draw(
                st.fixed_dictionaries(
                    {"signed": json_values}, optional={"display_name": st.text(max_size=5)}
                )
                | json_values
            )
        else:
            content[key] = draw(json_values)
    return content


@st.composite
def events(draw, room_version: str = "10"):
    """A PDU-shaped event for ``room_version`` (hashes and signatures are arbitrary)."""
    etype = draw(st.sampled_from(EVENT_TYPES))
    ev = {
        "type": etype,
        "sender": draw(user_ids),
        "content": draw(contents()),
        "origin_server_ts": draw(st.integers(min_value=0, max_value=MAX_SAFE)),
        "depth": draw(st.integers(min_value=0, max_value=MAX_SAFE)),
        "prev_events": draw(st.lists(event_ids, max_size=3)),
        "auth_events": draw(st.lists(event_ids, max_size=3)),
        "hashes": {
            "sha256": draw(st.text(alphabet="ABCDEFabcdef0123456789+/", min_size=43, max_size=43))
        },
        "signatures": {"example.org": {"ed25519:a": draw(st.text(max_size=10))}},
    }
    if not (room_version == "12" and etype == "m.room.create"):
        ev["room_id"] = (
            "!" + draw(st.text(alphabet="abcdefgh", min_size=1, max_size=6)) + ":example.org"
        )
    if etype == "m.room.create":
        ev["state_key"] = ""
    elif etype != "m.room.message" and draw(st.booleans()):
        ev["state_key"] = draw(st.text(max_size=6) | user_ids)
    for key in draw(st.lists(st.sampled_from(TOP_LEVEL_EXTRA_KEYS), max_size=3, unique=True)):
        ev[key] = draw(json_values)
    if draw(st.booleans()):
        ev["unsigned"] = draw(
            st.dictionaries(
                st.sampled_from(["age", "foo", "transaction_id"]), json_values, max_size=2
            )
        )
    return ev
