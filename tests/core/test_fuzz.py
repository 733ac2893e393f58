"""Fuzz: arbitrary JSON into every public core function. The only exception allowed out is
MatrixError (the core's one documented exception type); nothing else may escape."""

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bastion.core as core
from bastion.core.events import validate_pdu
from tests.support.strategies import any_json, events

KEY = core.signing_key_from_seed(b"\x03" * 32)
VERSIONS = st.sampled_from(["1", "3", "4", "6", "10", "11", "12", "13", "", "x"]) | st.text(
    max_size=3
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values shaped like events but broken in arbitrary places: start from a real event and
# replace some of its fields by arbitrary JSON.
broken_events = st.builds(
    lambda ev, keys, vals: {**ev, **dict(zip(keys, vals, strict=False))},
    events("10"),
    st.lists(st.sampled_from(["type", "content", "sender", "room_id", "state_key", "prev_events",
                              "auth_events", "hashes", "signatures", "depth", "unsigned",
                              "origin_server_ts", "event_id"]), max_size=4),
    st.lists(any_json, max_size=4),
)  # fmt: skip
event_like = any_json | broken_events


def only_matrix_errors(fn, *args):
    with contextlib.suppress(core.MatrixError):
        fn(*args)


@FUZZ
@given(event_like, VERSIONS)
def test_event_functions(value, version):
    only_matrix_errors(core.compute_content_hash, value)
    only_matrix_errors(core.compute_event_id, value, version)
    only_matrix_errors(core.compute_reference_hash, value, version)
    only_matrix_errors(core.redact, value, version)
    only_matrix_errors(core.check_content_hash, value)
    only_matrix_errors(core.check_event_size, value)
    only_matrix_errors(validate_pdu, value, version)
    only_matrix_errors(core.sign_event, value, version, "example.org", "ed25519:1", KEY)
    only_matrix_errors(
        core.verify_event, value, version, {"example.org": {"ed25519:1": KEY.verify_key}}
    )


@FUZZ
@given(any_json, st.text(max_size=10), st.text(max_size=10))
def test_signing_functions(value, name, key_id):
    only_matrix_errors(core.canonical_json, value)
    only_matrix_errors(core.sign_json, value, name, "ed25519:" + key_id, KEY)
    only_matrix_errors(core.verify_signed_json, value, name, key_id, KEY.verify_key)
    only_matrix_errors(core.verify_signed_json, value, name, "ed25519:" + key_id, KEY.verify_key)


@FUZZ
@given(any_json)
def test_decoders(value):
    only_matrix_errors(core.decode_base64, value)
    only_matrix_errors(core.verify_key_from_base64, value)
    only_matrix_errors(core.signing_key_from_seed, value)
    only_matrix_errors(core.get_room_version, value)


@FUZZ
@given(event_like, st.lists(event_like, max_size=4), VERSIONS)
def test_auth_functions(event, auth_events, version):
    only_matrix_errors(core.check_auth, event, auth_events, version)
    state = {(str(i), ""): ev for i, ev in enumerate(auth_events)}
    only_matrix_errors(core.check_auth_against_state, event, state, version)
    only_matrix_errors(core.auth_types_for_event, event, version)


@FUZZ
@given(
    st.lists(
        st.dictionaries(
            st.tuples(st.text(max_size=3), st.text(max_size=3)), st.text(max_size=5), max_size=3
        ),
        max_size=3,
    ),
    st.dictionaries(st.text(max_size=5), event_like, max_size=4),
    VERSIONS,
)
def test_resolve_state(state_sets, event_map, version):
    only_matrix_errors(core.resolve_state, version, state_sets, event_map)
