"""The ledger's anchors (issue 8, "Anchors"): the append-only file anchor with its hash chain,
and the Ethereum anchor against an in-process chain (eth-tester), with the offline receipt
checks. No network."""

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import threading
import time

import pytest
from eth_account import Account
from web3 import EthereumTesterProvider, Web3

from bastion.ledger import anchors
from bastion.ledger.anchors import (
    AnchorConfigError,
    EthereumAnchor,
    FileAnchor,
    TornLineError,
    make_ethereum_anchor,
    read_file_anchor,
    verify_ethereum_receipt,
    verify_receipt,
)

ORIGIN = "example.org/bastion-ledger"


def note(size: int) -> tuple[bytes, int, bytes]:
    """A checkpoint note as the anchors see it: opaque bytes, with its size and root."""
    root = hashlib.sha256(b"root %d" % size).digest()
    text = f"{ORIGIN}\n{size}\n{base64.b64encode(root).decode()}\n\n"
    sig = base64.b64encode(b"\x01\x02\x03\x04" + bytes(64)).decode()
    return (text + f"\u2014 {ORIGIN} {sig}\n").encode(), size, root


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def publish_all(anchor, notes):
    async def run():
        return [await anchor.publish(*n) for n in notes]

    return asyncio.run(run())


# --- File anchor ---------------------------------------------------------------------------------


def test_file_anchor_appends_and_reads_back(tmp_path):
    path = tmp_path / "anchor.jsonl"
    anchor = FileAnchor(path, clock=Clock())
    notes = [note(n) for n in (3, 10, 11, 250)]
    receipts = publish_all(anchor, notes)
    assert [r["line"] for r in receipts] == [1, 2, 3, 4]
    assert receipts == read_file_anchor(path)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5
    offset = 0
    for (checkpoint, size, root), receipt, line in zip(notes, receipts, lines, strict=False):
        assert receipt["offset"] == offset
        offset += len(line) + 1
        assert receipt["line_sha256"] == base64.b64encode(hashlib.sha256(line).digest()).decode()
        record = json.loads(line)
        assert record["origin"] == ORIGIN and record["size"] == size
        assert base64.b64decode(record["root"]) == root
        assert base64.b64decode(record["note"]) == checkpoint
        assert base64.b64decode(record["note_sha256"]) == hashlib.sha256(checkpoint).digest()
        assert verify_receipt(receipt, checkpoint)
    # The chain: line 1 starts it, each later line carries the previous line's hash.
    assert json.loads(lines[0])["prev"] is None
    for before, line in zip(lines[:3], lines[1:4], strict=True):
        assert (
            json.loads(line)["prev"] == base64.b64encode(hashlib.sha256(before).digest()).decode()
        )
    # The timestamps are the injected clock's, never the anchor's own.
    assert [r["ts"] for r in receipts] == [1_700_000_001_000 + 1000 * i for i in range(4)]
    # A second anchor on the same file continues the chain.
    more = FileAnchor(path, clock=Clock()).append(*note(300), ts=5)
    assert more["line"] == 5 and read_file_anchor(path)[-1] == more


def test_receipt_for_another_note_fails(tmp_path):
    anchor = FileAnchor(tmp_path / "a", clock=Clock())
    (receipt,) = publish_all(anchor, [note(5)])
    other = note(6)[0]
    assert not verify_receipt(receipt, other)
    assert not verify_receipt(receipt, note(5)[0] + b"x")
    # The line in the receipt is covered by its hash, and the receipt's figures by the line.
    forged = dict(receipt, entry=receipt["entry"].replace('"size":5', '"size":6'))
    assert not verify_receipt(forged, note(5)[0])
    assert not verify_receipt(dict(receipt, size=6), note(5)[0])
    assert not verify_receipt(dict(receipt, line=2), note(5)[0])
    assert not verify_receipt(dict(receipt, anchor="nope"), note(5)[0])
    assert not verify_receipt({}, note(5)[0])


def make_file(tmp_path, count=4):
    path = tmp_path / "anchor.jsonl"
    anchor = FileAnchor(path, clock=Clock())
    publish_all(anchor, [note(10 * (i + 1)) for i in range(count)])
    return path, path.read_bytes().split(b"\n")[:-1]


def test_edited_line_is_named(tmp_path):
    path, lines = make_file(tmp_path)
    # A canonical, self-consistent edit of line 2 (another size): only the chain catches it.
    record = json.loads(lines[1])
    record["size"] = 99
    lines[1] = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match="line 3: the hash chain is broken"):
        read_file_anchor(path)


def test_edit_that_breaks_the_form_is_named(tmp_path):
    path, lines = make_file(tmp_path)
    lines[2] = lines[2].replace(b'"v":1', b'"v":2')
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match="line 3: not a valid anchor record"):
        read_file_anchor(path)


def test_deleted_line_is_named(tmp_path):
    path, lines = make_file(tmp_path)
    del lines[1]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match="line 2: the record says it is line 3"):
        read_file_anchor(path)


def test_cut_at_the_front_is_named(tmp_path):
    path, lines = make_file(tmp_path)
    path.write_bytes(b"\n".join(lines[1:]) + b"\n")
    with pytest.raises(ValueError, match="line 1: the record says it is line 2"):
        read_file_anchor(path)


def test_swapped_lines_are_named(tmp_path):
    path, lines = make_file(tmp_path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match="line 2"):
        read_file_anchor(path)


def test_truncated_file(tmp_path):
    path, lines = make_file(tmp_path)
    receipts = read_file_anchor(path)
    # Cut in the middle of line 3: a torn last line, reported with the records before it.
    data = b"\n".join(lines) + b"\n"
    cut = receipts[2]["offset"] + 17
    path.write_bytes(data[:cut])
    with pytest.raises(TornLineError, match="line 3: partial last line") as info:
        read_file_anchor(path)
    assert info.value.entries == receipts[:2]
    # Cut at a line boundary: the file alone cannot tell, the stored receipts do.
    path.write_bytes(data[: receipts[2]["offset"]])
    kept = read_file_anchor(path)
    assert kept == receipts[:2]
    assert receipts[3] not in kept


def test_torn_last_line_then_append_starts_a_new_line(tmp_path):
    path, lines = make_file(tmp_path, count=2)
    good = read_file_anchor(path)
    # A crash tore the third write.
    with open(path, "ab") as f:
        f.write(b'{"n":3,"note":"AAA')
    with pytest.raises(TornLineError) as info:
        read_file_anchor(path)
    assert info.value.line == 3 and info.value.entries == good
    receipt = FileAnchor(path, clock=Clock()).append(*note(40), ts=7)
    assert receipt["line"] == 4
    assert verify_receipt(receipt, note(40)[0])
    entries = read_file_anchor(path)
    assert entries[:2] == good and entries[2] == receipt
    record = json.loads(receipt["entry"])
    assert record["torn"] == {
        "line": 3,
        "sha256": base64.b64encode(hashlib.sha256(b'{"n":3,"note":"AAA').digest()).decode(),
    }
    # The fragment is covered by the chain: changing it, or removing it, is named.
    data = path.read_bytes()
    path.write_bytes(data.replace(b'{"n":3,"note":"AAA', b'{"n":3,"note":"BBB'))
    with pytest.raises(ValueError, match="line 3: the fragment differs"):
        read_file_anchor(path)
    path.write_bytes(data.replace(b'{"n":3,"note":"AAA\n', b""))
    with pytest.raises(ValueError, match="line 3: the record says it is line 4"):
        read_file_anchor(path)
    # A garbage line with no recovery record after it is not accepted.
    path.write_bytes(data.replace(b'{"n":3,"note":"AAA\n', b"garbage\n" + lines[1] + b"\n"))
    with pytest.raises(ValueError):
        read_file_anchor(path)


def test_torn_first_write(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b'{"v":1,')
    receipt = FileAnchor(path, clock=Clock()).append(*note(1), ts=1)
    assert receipt["line"] == 2 and receipt["offset"] == len(b'{"v":1,') + 1
    assert read_file_anchor(path) == [receipt]


def test_the_writer_refuses_to_chain_onto_a_damaged_last_line(tmp_path):
    path, lines = make_file(tmp_path, count=2)
    path.write_bytes(lines[0] + b"\nnot a record\n")
    with pytest.raises(ValueError, match="not a valid record"):
        FileAnchor(path, clock=Clock()).append(*note(40), ts=7)


def test_concurrent_writers_in_one_process(tmp_path):
    path = tmp_path / "a"
    anchor = FileAnchor(path, clock=Clock())
    results: list[dict] = []
    lock = threading.Lock()

    def work(base):
        for i in range(25):
            r = anchor.append(*note(base + i), ts=base + i)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=work, args=(1000 * t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = read_file_anchor(path)
    assert len(entries) == 100
    assert sorted(results, key=lambda r: r["line"]) == entries


def test_concurrent_publishes_on_the_loop(tmp_path):
    path = tmp_path / "a"
    anchor = FileAnchor(path, clock=Clock())

    async def run():
        return await asyncio.gather(*(anchor.publish(*note(i)) for i in range(1, 31)))

    receipts = asyncio.run(run())
    assert sorted(r["line"] for r in receipts) == list(range(1, 31))
    assert sorted(receipts, key=lambda r: r["line"]) == read_file_anchor(path)


def test_bad_input_is_refused(tmp_path):
    anchor = FileAnchor(tmp_path / "a", clock=Clock())
    with pytest.raises(ValueError):
        anchor.append(b"no origin line", 1, bytes(32), 1)
    with pytest.raises(ValueError):
        anchor.append(note(1)[0], 1, b"short", 1)
    # The note's own size and root must be the ones given.
    with pytest.raises(ValueError, match="another size or root"):
        anchor.append(note(1)[0], 2, note(1)[2], 1)
    with pytest.raises(ValueError, match="another size or root"):
        anchor.append(note(1)[0], 1, note(2)[2], 1)
    with pytest.raises(ValueError, match="size line"):
        anchor.append(b"origin\n01\nroot\n\n", 1, bytes(32), 1)
    assert not (tmp_path / "a").exists()


# --- Ethereum anchor -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain():
    return Web3(EthereumTesterProvider())


def test_ethereum_anchor_publishes_and_verifies(chain):
    anchor = EthereumAnchor(chain, chain.eth.accounts[0], timeout=30)
    notes = [note(n) for n in (1, 2, 8, 100)]
    receipts = publish_all(anchor, notes)
    assert len({r["tx_hash"] for r in receipts}) == 4
    for (checkpoint, size, root), receipt in zip(notes, receipts, strict=True):
        assert receipt["anchor"] == "ethereum"
        assert receipt["chain_id"] == chain.eth.chain_id
        assert receipt["from"] == chain.eth.accounts[0]
        assert receipt["data"] == "0x" + (b"BSTN\x01" + hashlib.sha256(checkpoint).digest()).hex()
        assert receipt["size"] == size and base64.b64decode(receipt["root"]) == root
        # What the chain holds is exactly what the receipt says.
        tx = chain.eth.get_transaction(receipt["tx_hash"])
        assert bytes(tx["input"]) == b"BSTN\x01" + hashlib.sha256(checkpoint).digest()
        assert tx["blockNumber"] == receipt["block_number"]
        assert verify_receipt(receipt, checkpoint)
        assert verify_ethereum_receipt(chain, receipt, checkpoint)
        json.dumps(receipt)  # JSON-able as stored and served
    # Each receipt is for its own note only.
    assert not verify_receipt(receipts[0], notes[1][0])
    assert not verify_ethereum_receipt(chain, receipts[0], notes[1][0])
    # Confirmations: the last one has none yet.
    assert not verify_ethereum_receipt(chain, receipts[-1], notes[-1][0], min_confirmations=1)
    assert verify_ethereum_receipt(chain, receipts[0], notes[0][0], min_confirmations=3)


def test_ethereum_receipt_that_does_not_match_the_chain_fails(chain):
    anchor = EthereumAnchor(chain, chain.eth.accounts[1], timeout=30)
    checkpoint, size, root = note(7)
    (receipt,) = publish_all(anchor, [(checkpoint, size, root)])
    assert verify_ethereum_receipt(chain, receipt, checkpoint)
    # A changed note.
    changed = checkpoint.replace(b"\n7\n", b"\n8\n")
    assert not verify_receipt(receipt, changed)
    assert not verify_ethereum_receipt(chain, receipt, changed)
    # A receipt claiming the changed note's data: offline fine, the chain disagrees.
    forged = dict(
        receipt,
        size=8,
        data=anchors._hex(anchors.ethereum_data(changed)),
        note_sha256=base64.b64encode(hashlib.sha256(changed).digest()).decode(),
    )
    assert verify_receipt(forged, changed)
    assert not verify_ethereum_receipt(chain, forged, changed)
    # The receipt's size and root are the note's own.
    assert not verify_receipt(dict(receipt, size=8), checkpoint)
    assert not verify_receipt(dict(receipt, root=base64.b64encode(bytes(32)).decode()), checkpoint)
    # A transaction that is not on the chain.
    missing = dict(receipt, tx_hash="0x" + "11" * 32)
    assert verify_receipt(missing, checkpoint)
    assert not verify_ethereum_receipt(chain, missing, checkpoint)
    # Another chain, another block, another sender.
    assert not verify_ethereum_receipt(chain, dict(receipt, chain_id=1), checkpoint)
    assert not verify_ethereum_receipt(
        chain, dict(receipt, block_hash="0x" + "22" * 32), checkpoint
    )
    assert not verify_ethereum_receipt(
        chain, dict(receipt, block_number=receipt["block_number"] - 1), checkpoint
    )
    assert not verify_ethereum_receipt(
        chain, dict(receipt, **{"from": chain.eth.accounts[2]}), checkpoint
    )
    # The same receipt checked against a different chain (a fresh one) fails.
    other = Web3(EthereumTesterProvider())
    assert not verify_ethereum_receipt(other, receipt, checkpoint)


def test_ethereum_anchor_signs_locally_with_a_key(chain):
    local = Account.create()
    funder = chain.eth.accounts[0]
    tx = chain.eth.send_transaction({"from": funder, "to": local.address, "value": 10**18})
    chain.eth.wait_for_transaction_receipt(tx)
    # Configured from settings: the anchor's account is the key's address, and its web3 signs
    # locally (the signing middleware); here the provider is swapped for the in-process chain.
    anchor = make_ethereum_anchor("http://127.0.0.1:9", private_key=local.key.hex(), timeout=30)
    assert anchor.account == local.address
    anchor.web3.provider = chain.provider
    checkpoint, size, root = note(12)
    (receipt,) = publish_all(anchor, [(checkpoint, size, root)])
    assert receipt["from"] == local.address
    assert verify_ethereum_receipt(chain, receipt, checkpoint)


def test_ethereum_anchor_refuses_a_note_for_another_tree(chain):
    anchor = EthereumAnchor(chain, chain.eth.accounts[0], timeout=30)
    sent = chain.eth.get_transaction_count(chain.eth.accounts[0])
    with pytest.raises(ValueError, match="another size or root"):
        asyncio.run(anchor.publish(note(3)[0], 4, note(3)[2]))
    assert chain.eth.get_transaction_count(chain.eth.accounts[0]) == sent


def test_ethereum_configuration_errors(monkeypatch):
    with pytest.raises(AnchorConfigError, match="exactly one"):
        make_ethereum_anchor("http://127.0.0.1:9")
    with pytest.raises(AnchorConfigError, match="private key"):
        make_ethereum_anchor("http://127.0.0.1:9", private_key="0x1234")
    with pytest.raises(AnchorConfigError, match="not an Ethereum address"):
        make_ethereum_anchor("http://127.0.0.1:9", account="0xnope")
    # Without web3 installed, the error comes at configuration time and says what to install.
    monkeypatch.setitem(sys.modules, "web3", None)
    with pytest.raises(AnchorConfigError, match=r"bastion\[ethereum\]"):
        make_ethereum_anchor("http://127.0.0.1:9", account="0x" + "00" * 20)


def test_anchors_module_does_not_import_web3():
    code = (
        "import sys; sys.modules['web3'] = None; import bastion.ledger.anchors as a; "
        "assert 'eth_account' not in sys.modules; print(a.FileAnchor.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "file"


def test_ethereum_publish_is_bounded_by_its_timeout(chain):
    class Slow:
        """A web3 stand-in whose send never returns in time."""

        def __init__(self):
            self.release = threading.Event()

        def to_checksum_address(self, a):
            return Web3.to_checksum_address(a)

        @property
        def eth(self):
            self.release.wait(10)
            raise RuntimeError("released")

    slow = Slow()
    anchor = EthereumAnchor(slow, chain.eth.accounts[0], timeout=0.2)

    async def run():
        start = time.monotonic()
        try:
            with pytest.raises(TimeoutError):
                await anchor.publish(*note(1))
            return time.monotonic() - start
        finally:
            slow.release.set()

    assert asyncio.run(run()) < 2
