"""The inbound PDU pipeline, one module per step of the S-S API "Checks performed on receipt of
a PDU" (SPEC-MAP §2.4):

* :mod:`~bastion.federation.pdu.parse` — the transaction, the event ID, checks 1–3 (format,
  signatures, content hash);
* :mod:`~bastion.federation.pdu.fetch` — every network request: missing auth events, missing
  prev events, the state at a prev event, an authorising server's keys — within budgets;
* :mod:`~bastion.federation.pdu.decide` — checks 4, 5 and 6, pure: accept, reject or soft-fail
  with the rule and the reason;
* :mod:`~bastion.federation.pdu.persist` — the outcome handed to the room engine, the only
  writer of a room's history;
* :mod:`~bastion.federation.pdu.pipeline` — :class:`FederationEventHandler`, the orchestration
  (``hs.federation_events``).
"""

from bastion.federation.pdu.pipeline import FederationEventHandler

__all__ = ["FederationEventHandler"]
