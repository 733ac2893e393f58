"""Whether a received redaction applies to its target (core/redactions.py; rooms v3+ "Handling
redactions")."""

from __future__ import annotations

from bastion.core.redactions import may_apply_redaction, redaction_target_id
from bastion.core.room_versions import get_room_version

V10 = get_room_version("10")
V11 = get_room_version("11")
ROOM = "!room:a.example"
TARGET = {"room_id": ROOM, "sender": "@alice:a.example", "type": "m.room.message"}
PL = {"users": {"@mod:b.example": 50}, "redact": 50}


def redaction(sender: str, room: str = ROOM) -> dict:
    return {"type": "m.room.redaction", "room_id": room, "sender": sender, "redacts": "$t"}


def test_the_target_id_by_room_version():
    ev = {"type": "m.room.redaction", "redacts": "$outer", "content": {"redacts": "$inner"}}
    assert redaction_target_id(ev, V10) == "$outer"
    assert redaction_target_id(ev, V11) == "$inner"
    assert redaction_target_id({"type": "m.room.redaction", "content": {}}, V11) is None
    assert redaction_target_id({"type": "m.room.message", "redacts": "$x"}, V10) is None
    assert redaction_target_id({"type": "m.room.redaction", "redacts": 5}, V10) is None


def test_same_server_or_the_power_to_redact():
    assert may_apply_redaction(redaction("@bob:a.example"), TARGET, None, PL, V10)
    assert may_apply_redaction(redaction("@mod:b.example"), TARGET, None, PL, V10)
    assert not may_apply_redaction(redaction("@eve:b.example"), TARGET, None, PL, V10)
    assert not may_apply_redaction(redaction("@eve:b.example"), TARGET, None, None, V10)


def test_never_across_rooms_nor_from_a_malformed_sender():
    assert not may_apply_redaction(redaction("@alice:a.example", "!other:a.example"), TARGET,
                                   None, PL, V10)  # fmt: skip
    assert not may_apply_redaction({**redaction("x"), "sender": 5}, TARGET, None, PL, V10)
    assert not may_apply_redaction(redaction("nonsense"), {**TARGET, "sender": "nonsense"},
                                   None, PL, V10)  # fmt: skip
