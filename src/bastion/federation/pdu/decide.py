"""The decision on a received PDU: checks 4, 5 and 6, pure (no store, no network, no clock).

S-S API "Checks performed on receipt of a PDU" (SPEC-MAP §2.4), checks 4–6, with their
consequences in "Rejection" and "Soft failure"; the auth rules of the room version (S-S API
"Authorization rules", :mod:`bastion.core.auth_rules`); rule 5.2 of room versions 8+ (restricted
joins: the authorising server's signature, C-S "Restricted rooms").

* check 4 — the event passes the auth rules against its own ``auth_events``; failure: rejected;
* check 5 — it passes them against the state before it; failure: rejected;
* check 6 — it passes them against the room's current state; failure: soft-failed.

Everything is gathered by the shell before: the event, its auth events (and which of them were
rejected), the state before it and the current state as maps ``(type, state_key) → event``, the
room version and a signature verifier (:func:`signature_verifier`, built from keys the shell
fetched). :func:`decide` runs the three checks in order. The pipeline runs check 4
(:func:`check_auth_events`) before it fetches anything for checks 5–6 — an event its own auth
events reject costs no further network request — and checks 5–6 (:func:`check_states`) inside
the room engine's append, under the room's lock, where the current state cannot move.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nacl.signing import VerifyKey

from bastion.core.auth_rules import JAUVS, AuthResult, check_auth, check_auth_against_state
from bastion.core.events import verify_event_signature
from bastion.core.identifiers import server_name_of
from bastion.errors import MatrixError

#: ``verify(event, server_name)``: does ``event`` carry a valid signature of that server (rule
#: 5.2 of v8+, the authoriser of a restricted join)?
SignatureVerifier = Callable[[dict[str, Any], str], bool]
#: A room state as events: ``(type, state_key) → event``.
StateEvents = Mapping[tuple[str, str], Mapping[str, Any]]

#: How each check names what the event was checked against, in reasons and logs.
_AGAINST = {4: "auth events", 5: "state before the event", 6: "current state"}


@dataclass(frozen=True)
class Outcome:
    """What happens to a received event: ``accept``; ``reject`` at check 4 or 5; ``soft_fail``
    at check 6 — with the auth rule that decided (numbered as the room version numbers it, None
    for structural problems) and its reason."""

    outcome: Literal["accept", "reject", "soft_fail"]
    check: int | None = None
    rule: str | None = None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "accept"

    @property
    def message(self) -> str | None:
        """``"<checked against>: rule <rule>: <reason>"`` (None when accepted): the error of a
        rejected PDU in the /send response, and the log line."""
        if self.check is None:
            return None
        return f"{_AGAINST[self.check]}: rule {self.rule}: {self.reason}"


ACCEPT = Outcome("accept")


def _failed(kind: Literal["reject", "soft_fail"], check: int, result: AuthResult) -> Outcome:
    return Outcome(kind, check, result.rule, result.reason)


def check_auth_events(
    event: dict[str, Any],
    auth_events: list[dict[str, Any]],
    room_version: str,
    *,
    rejected: Collection[str] = (),
    verify: SignatureVerifier | None = None,
) -> Outcome:
    """Check 4: the auth rules against the event's own auth events (in v12 with the room's create
    event, which is never listed). ``rejected``: IDs of auth events that were themselves rejected
    (rule 3.3 refuses an event that names one)."""
    result = check_auth(
        event, auth_events, room_version,
        rejected=rejected, verify_signature=verify,
    )  # fmt: skip
    return ACCEPT if result else _failed("reject", 4, result)


def check_states(
    event: dict[str, Any],
    state_before: StateEvents,
    current_state: StateEvents | None,
    room_version: str,
    *,
    verify: SignatureVerifier | None = None,
) -> Outcome:
    """Checks 5 and 6: the auth rules against the state before the event (failure: rejected),
    then against the room's current state (failure: soft-failed). ``current_state`` is None when
    check 6 does not apply (a backfilled event, a room without a current state)."""
    before = check_auth_against_state(event, state_before, room_version,
                                      verify_signature=verify)  # fmt: skip
    if not before:
        return _failed("reject", 5, before)
    if current_state is not None:
        now = check_auth_against_state(event, current_state, room_version,
                                       verify_signature=verify)  # fmt: skip
        if not now:
            return _failed("soft_fail", 6, now)
    return ACCEPT


def decide(
    event: dict[str, Any],
    auth_events: list[dict[str, Any]],
    state_before: StateEvents,
    current_state: StateEvents | None,
    room_version: str,
    *,
    rejected_auth: Collection[str] = (),
    verify: SignatureVerifier | None = None,
) -> Outcome:
    """Checks 4, 5 and 6 in order (see the module docstring): accept, reject (check 4 or 5) or
    soft-fail (check 6), with the rule and the reason."""
    outcome = check_auth_events(event, auth_events, room_version, rejected=rejected_auth,
                                verify=verify)  # fmt: skip
    if not outcome.accepted:
        return outcome
    return check_states(event, state_before, current_state, room_version, verify=verify)


def authoriser_server(event: dict[str, Any]) -> str | None:
    """The server of the user named in ``join_authorised_via_users_server`` (rule 5.2 of v8+),
    or None."""
    content = event.get("content")
    return server_name_of(content.get(JAUVS)) if isinstance(content, dict) else None


def signature_verifier(
    room_version: str,
    own_server: str,
    authoriser: str | None,
    authoriser_keys: Mapping[str, VerifyKey],
) -> SignatureVerifier:
    """The verifier of rule 5.2 (v8+ restricted joins: "the event is signed by the server of the
    user named in ``join_authorised_via_users_server``"), from the keys the shell gathered for
    the ``authoriser``'s server (key ID → verify key; ours when it is us). The sender's server,
    when it is not us, counts as verified: check 2 verified its signature with the event's
    others. Any other server: not verified."""

    def verify(event: dict[str, Any], server: str) -> bool:
        if server != own_server and server == server_name_of(event.get("sender")):
            return True
        if server != authoriser:
            return False
        for key_id, key in authoriser_keys.items():
            try:
                verify_event_signature(event, room_version, server, key_id, key)
            except MatrixError:
                continue
            return True
        return False

    return verify
