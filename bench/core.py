"""Benchmark of the protocol core, against Synapse's functions on the same inputs in the same run.

Prints a table, then the figures as one JSON object on the last line:
canonical-JSON encodes/s, event signs/s, event verifications/s (content hash + Ed25519 signature)
with the raw PyNaCl verify rate as the physical limit, auth checks/s, and the time to resolve
the state of a 10,000-event room with conflicting forks. Each figure is the median of several
timed runs. Synapse (matrix-synapse) must be installed: `pip install -e '.[test]'`.

Run: python bench/core.py [--quick]
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bastion.core import canonical_json, sign_event, signing_key_from_seed, verify_event  # noqa: E402
from bastion.core.events import _checked, _encode, _redact  # noqa: E402
from bastion.core.room_versions import get_room_version  # noqa: E402

QUICK = "--quick" in sys.argv
REPEATS = 3 if QUICK else 7
SEED = b"\x07" * 32
ROOM_VERSION = "11"


def rate(fn, items, repeats=REPEATS) -> float:
    """Median operations per second of ``fn`` over ``items``."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        rates.append(len(items) / (time.perf_counter() - t0))
    return statistics.median(rates)


def sample_events(n: int) -> list[dict]:
    out = []
    for i in range(n):
        out.append(
            {
                "type": "m.room.message",
                "room_id": "!benchroom:example.org",
                "sender": f"@user{i % 50}:example.org",
                "content": {
                    "msgtype": "m.text",
                    "body": f"message number {i} " + "lorem ipsum " * 8,
                },
                "origin_server_ts": 1_700_000_000_000 + i,
                "depth": 10 + i,
                "prev_events": ["$" + "p" * 42 + str(i % 10)],
                "auth_events": ["$" + "a" * 43, "$" + "b" * 43, "$" + "c" * 43],
                "hashes": {},
                "signatures": {},
                "unsigned": {"age": 5},
            }
        )
    return out


def bench_json_and_signing(n: int) -> dict:
    import signedjson.key
    from canonicaljson import encode_canonical_json
    from signedjson.sign import verify_signed_json as syn_verify_json
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.crypto.event_signing import add_hashes_and_signatures, check_event_content_hash
    from synapse.events import make_event_from_dict
    from synapse.events.utils import prune_event

    key = signing_key_from_seed(SEED)
    syn_key = signedjson.key.decode_signing_key_base64(
        "ed25519", "1", signedjson.key.encode_signing_key_base64(key)
    )
    syn_rv = KNOWN_ROOM_VERSIONS[ROOM_VERSION]
    events = sample_events(n)
    signed = [sign_event(e, ROOM_VERSION, "example.org", "ed25519:1", key) for e in events]
    keys = {"example.org": {"ed25519:1": key.verify_key}}
    assert all(verify_event(e, ROOM_VERSION, keys) for e in signed)

    r: dict = {}
    r["canonical_json_encodes_per_s"] = rate(canonical_json, signed)
    r["synapse_canonical_json_encodes_per_s"] = rate(encode_canonical_json, signed)

    r["event_signs_per_s"] = rate(
        lambda e: sign_event(e, ROOM_VERSION, "example.org", "ed25519:1", key), events
    )
    r["synapse_event_signs_per_s"] = rate(
        lambda e: add_hashes_and_signatures(syn_rv, copy.copy(e), "example.org", syn_key), events
    )

    r["event_verifications_per_s"] = rate(lambda e: verify_event(e, ROOM_VERSION, keys), signed)

    syn_events = [make_event_from_dict(copy.deepcopy(e), syn_rv) for e in signed]
    syn_verify_key = signedjson.key.get_verify_key(syn_key)

    def synapse_verify(ev):
        if not check_event_content_hash(ev):
            raise AssertionError("hash")
        syn_verify_json(prune_event(ev).get_pdu_json(), "example.org", syn_verify_key)

    r["synapse_event_verifications_per_s"] = rate(synapse_verify, syn_events)

    # The physical limit: PyNaCl's Ed25519 verification of the same signed bytes.
    rv = get_room_version(ROOM_VERSION)
    from bastion.core.base64 import decode_base64

    pairs = []
    for e in signed:
        red = _redact(_checked(e), rv)
        red.pop("signatures", None)
        red.pop("unsigned", None)
        pairs.append((_encode(red), decode_base64(e["signatures"]["example.org"]["ed25519:1"])))
    vk = key.verify_key
    r["raw_pynacl_verifies_per_s"] = rate(lambda p: vk.verify(p[0], p[1]), pairs)
    r["verification_vs_raw_verify"] = (
        r["event_verifications_per_s"] / r["raw_pynacl_verifies_per_s"]
    )
    return r


def bench_auth(n: int) -> dict:
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.event_auth import check_state_dependent_auth_rules
    from synapse.events import make_event_from_dict

    from bastion.core.auth_rules import check_auth_against_state
    from tests.support.room_builder import default_power_levels, standard_room

    results = {}
    for version in ("11", "12"):
        room = standard_room(version, "@alice:example.org", join_rule="public")
        room.set_power_levels(default_power_levels(room))
        members = [f"@member{i}:example.org" for i in range(20)]
        for user in members:
            room.set_member(user)
        state = dict(room.state)
        candidates = []
        for i in range(n):
            sender = members[i % 20]
            if i % 3 == 0:
                candidates.append(room.build("m.room.message", {"body": str(i)}, sender))
            elif i % 3 == 1:
                candidates.append(room.build("m.room.topic", {"topic": str(i)}, sender, ""))
            else:
                candidates.append(room.member(sender, "leave"))
        # As the room engine and state resolution do, pass the v12 create event's ID.
        create_id = "$" + room.room_id[1:] if version == "12" else None
        ours = [
            check_auth_against_state(e, state, version, create_event_id=create_id).allowed
            for e in candidates
        ]
        syn_rv = KNOWN_ROOM_VERSIONS[version]
        syn_state = [make_event_from_dict(copy.deepcopy(e), syn_rv) for e in state.values()]
        syn_candidates = [make_event_from_dict(copy.deepcopy(e), syn_rv) for e in candidates]

        def synapse_check(ev, syn_state=syn_state):
            try:
                check_state_dependent_auth_rules(ev, syn_state)
                return True
            except Exception:
                return False

        assert ours == [synapse_check(e) for e in syn_candidates], "auth decisions differ"
        results[f"auth_checks_per_s_v{version}"] = rate(
            lambda e, state=state, version=version, cid=create_id: check_auth_against_state(
                e, state, version, create_event_id=cid
            ),
            candidates,
        )
        results[f"synapse_auth_checks_per_s_v{version}"] = rate(synapse_check, syn_candidates)
    results["auth_checks_per_s"] = results["auth_checks_per_s_v12"]
    results["synapse_auth_checks_per_s"] = results["synapse_auth_checks_per_s_v12"]
    return results


def bench_state_res() -> dict:
    from bench.state_res import main as state_res_main

    figures = state_res_main(["--quick"] if QUICK else [])
    figures["state_res_10k_speedup_vs_synapse"] = figures.pop("ratio")
    return figures


def main() -> None:
    n = 500 if QUICK else 2000
    figures: dict = {}
    figures.update(bench_json_and_signing(n))
    figures.update(bench_auth(n))
    figures.update(bench_state_res())
    for name in ("canonical_json_encodes_per_s", "event_signs_per_s", "event_verifications_per_s",
                 "auth_checks_per_s"):  # fmt: skip
        figures[f"{name}_ratio_vs_synapse"] = figures[name] / figures[f"synapse_{name}"]
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"{k:<{width}}  {v:,.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
