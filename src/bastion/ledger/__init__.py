"""The ledger: an append-only Merkle log of every event Bastion persists and every
security-relevant action, published as C2SP tiles and signed checkpoints (issue 8).

The pure core (formats and proofs, no I/O, no clock) is ``merkle``, ``tiles``, ``note``,
``checkpoint``, ``cosignature``, ``witness_protocol`` and ``proof_bundle``.
"""
