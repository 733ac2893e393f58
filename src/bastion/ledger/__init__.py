"""The ledger: a tamper-evident, verifiable log of every event and every security action (C2SP tlog formats)."""
