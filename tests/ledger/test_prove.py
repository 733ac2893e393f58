"""``bastion ledger prove`` and ``check-proof``: a proof bundle (C2SP tlog-proof@v1) made from a
real server's data directory verifies offline with the log's key and no database, and any
change to its entry, its inclusion proof, its checkpoint or its anchor receipt fails it."""

from __future__ import annotations

import base64
import json

import orjson
import pytest

from bastion.cli import main
from bastion.core.canonical_json import canonical_json
from bastion.ledger.cosignature import Ed25519Cosigner
from bastion.ledger.note import format_vkey
from bastion.ledger.proof_bundle import ProofBundle, format_proof_bundle, parse_proof_bundle
from bastion.ledger.verify import checkpoint_origin, read_signing_public_key
from tests.ledger.test_verify import build_synthetic
from tests.ledger.test_verify_tamper import build_scenario


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = build_scenario(tmp_path_factory.mktemp("prove"))
    _, public = read_signing_public_key(s["data"] / "signing.key")
    s["vkey"] = format_vkey(checkpoint_origin("localhost"), 0x01, public)
    return s


def prove(scenario, out, *args) -> int:
    return main(["ledger", "prove", *args, "--data-dir", str(scenario["data"]), "-o", str(out)])


def check(path, *args, capsys=None) -> tuple[int, dict]:
    if capsys is not None:
        capsys.readouterr()
    code = main(["ledger", "check-proof", str(path), "--json", *args])
    return code, (json.loads(capsys.readouterr().out) if capsys is not None else {})


@pytest.fixture
def bundle(scenario, tmp_path):
    out = tmp_path / "event.tlog-proof"
    assert prove(scenario, out, scenario["messages"][3]) == 0
    return out


def rewrite(path, **changes) -> None:
    b = parse_proof_bundle(path.read_bytes())
    fields = {"index": b.index, "proof": b.proof, "checkpoint": b.checkpoint, "extra": b.extra}
    fields.update(changes)
    path.write_bytes(format_proof_bundle(ProofBundle(**fields)))


def test_a_proof_verifies_offline(scenario, bundle, capsys):
    # check-proof reads only the file: no data directory, no database.
    code, result = check(bundle, "--key", scenario["vkey"], capsys=capsys)
    assert code == 0 and result["ok"] is True, result
    assert result["record"]["event_id"] == scenario["messages"][3]
    assert result["record"]["decision"] == "accepted"
    assert any("anchored by the file anchor" in n for n in result["notes"])
    assert bundle.read_bytes().startswith(b"c2sp.org/tlog-proof@v1\nextra ")


def test_without_a_key_the_bundles_own_keys_are_used_and_said_so(bundle, capsys):
    code, result = check(bundle, capsys=capsys)
    assert code == 0
    assert any("no --key given" in n for n in result["notes"])


def test_a_changed_entry_fails(scenario, bundle, capsys):
    b = parse_proof_bundle(bundle.read_bytes())
    extra = orjson.loads(b.extra)
    record = json.loads(base64.b64decode(extra["entry"]))
    record["sender"] = "@mallory:localhost"
    extra["entry"] = base64.b64encode(canonical_json(record)).decode()
    rewrite(bundle, extra=canonical_json(extra))
    code, result = check(bundle, "--key", scenario["vkey"], capsys=capsys)
    assert code == 1
    assert any("inclusion proof" in p for p in result["problems"])


def test_a_changed_proof_fails(scenario, bundle, capsys):
    b = parse_proof_bundle(bundle.read_bytes())
    assert b.proof
    rewrite(bundle, proof=(b"\x00" * 32, *b.proof[1:]))
    code, result = check(bundle, "--key", scenario["vkey"], capsys=capsys)
    assert code == 1 and any("inclusion proof" in p for p in result["problems"])
    rewrite(bundle, proof=b.proof, index=b.index + 1)
    assert check(bundle, "--key", scenario["vkey"])[0] == 1


def test_a_changed_checkpoint_fails(scenario, bundle, capsys):
    b = parse_proof_bundle(bundle.read_bytes())
    text = b.checkpoint.decode()
    origin, size, rest = text.split("\n", 2)
    forged = f"{origin}\n{int(size) + 1}\n{rest}".encode()
    rewrite(bundle, checkpoint=forged)
    code, result = check(bundle, "--key", scenario["vkey"], capsys=capsys)
    assert code == 1
    assert any("checkpoint" in p and "signature" in p for p in result["problems"])


def test_the_wrong_key_or_a_missing_cosignature_fails(scenario, bundle, capsys):
    other = format_vkey(checkpoint_origin("localhost"), 0x01, b"\x05" * 32)
    code, result = check(bundle, "--key", other, capsys=capsys)
    assert code == 1 and any("signature" in p for p in result["problems"])
    witness = Ed25519Cosigner("witness.example", b"\x06" * 32).vkey()
    code, result = check(bundle, "--key", scenario["vkey"], "--witness-key", witness,
                         capsys=capsys)  # fmt: skip
    assert code == 1 and result["problems"] == ["no valid cosignature by witness witness.example"]


def test_a_changed_receipt_fails(scenario, bundle, capsys):
    b = parse_proof_bundle(bundle.read_bytes())
    extra = orjson.loads(b.extra)
    assert extra["receipt"] is not None
    extra["receipt"]["size"] += 1
    rewrite(bundle, extra=canonical_json(extra))
    code, result = check(bundle, "--key", scenario["vkey"], capsys=capsys)
    assert code == 1 and result["problems"] == ["the anchor receipt does not hold this checkpoint"]


def test_prove_a_record_by_index(scenario, tmp_path, capsys):
    out = tmp_path / "record.tlog-proof"
    assert prove(scenario, out, "--record", "0") == 0
    code, result = check(out, "--key", scenario["vkey"], capsys=capsys)
    assert code == 0 and result["index"] == 0


def test_prove_and_check_errors(scenario, tmp_path, capsys):
    out = tmp_path / "p"
    assert prove(scenario, out, "$nosuchevent") == 1
    assert "no event $nosuchevent" in capsys.readouterr().err
    assert prove(scenario, out, "--record", "10000000") == 1
    assert prove(scenario, out) == 2
    assert prove(scenario, out, "$x", "--record", "1") == 2
    assert main(["ledger", "prove", "$x", "--data-dir", str(tmp_path / "none"), "-o",
                 str(out)]) == 2  # fmt: skip
    assert not out.exists()
    assert main(["ledger", "check-proof", str(tmp_path / "missing")]) == 2
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a proof")
    assert main(["ledger", "check-proof", str(garbage)]) == 1
    assert main(["ledger", "check-proof", str(garbage), "--key", "not a vkey"]) == 2


def test_proofs_over_full_and_partial_tiles(tmp_path, capsys):
    """Leaves under stored full tiles and in the partial tail, against a 70,000-leaf tree
    (level-1 tiles too)."""
    d = tmp_path / "data"
    info = build_synthetic(d, 70_000, device_keys=0)
    vkey = info["signer"].vkey()
    for index in (0, 300, 65_535, 65_536, info["size"] - 1):
        out = tmp_path / f"{index}.tlog-proof"
        assert main(["ledger", "prove", "--record", str(index), "--data-dir", str(d),
                     "-o", str(out)]) == 0  # fmt: skip
        code, result = check(out, "--key", vkey, capsys=capsys)
        assert (code, result["index"]) == (0, index), result
