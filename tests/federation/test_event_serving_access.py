"""Which members count as a server's (S-S API "Retrieving events": the requesting server must
have a user joined in the room): the server name of the parsed state key, never a suffix."""

from __future__ import annotations

from bastion.federation.event_serving import EventServing


class _Store:
    def __init__(self, events: dict[str, dict]) -> None:
        self.events = events

    def get_pdus(self, ids: list[str]) -> dict[str, dict]:
        return {i: self.events[i] for i in ids if i in self.events}


def _serving(members: dict[str, str]) -> tuple[EventServing, dict]:
    events, state = {}, {}
    for n, (user_id, membership) in enumerate(members.items()):
        eid = f"$m{n}"
        events[eid] = {"type": "m.room.member", "state_key": user_id,
                       "content": {"membership": membership}}  # fmt: skip
        state[("m.room.member", user_id)] = eid
    return EventServing(_Store(events), None), state


def test_a_member_of_another_server_does_not_count_by_suffix():
    # A malformed state key ending in ":example.org" belongs to "evil.com:example.org", not to
    # example.org: it must not make example.org a joined server.
    serving, state = _serving({"@x:evil.com:example.org": "join", "@y:example.org": "leave"})
    assert serving._memberships_of_server(state, "example.org") == ["leave"]


def test_members_of_the_server_count():
    serving, state = _serving({"@a:example.org": "join", "@b:other.org": "join"})
    assert serving._memberships_of_server(state, "example.org") == ["join"]
    assert serving._memberships_of_server(state, "other.org") == ["join"]
