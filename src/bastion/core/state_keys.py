"""The ``(type, state_key)`` keys of the room state entries Bastion looks up by name."""

CREATE_KEY = ("m.room.create", "")
POWER_LEVELS_KEY = ("m.room.power_levels", "")
JOIN_RULES_KEY = ("m.room.join_rules", "")
HISTORY_VISIBILITY_KEY = ("m.room.history_visibility", "")
SERVER_ACL_KEY = ("m.room.server_acl", "")
