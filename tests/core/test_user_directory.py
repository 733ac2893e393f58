"""The user directory's matching and ranking (bastion.core.user_directory)."""

from __future__ import annotations

from bastion.core.user_directory import DirectoryEntry, Matcher, rank_results, result_json


def e(user_id: str, name: str | None = None, avatar: str | None = None) -> DirectoryEntry:
    return DirectoryEntry(user_id, name, avatar)


def test_words_match_word_starts():
    m = Matcher("ali SMI")
    assert m.matches(e("@x:h", "Alice Smith"))
    assert m.matches(e("@alice.smith:h"))
    assert m.matches(e("@alice:h", "Bob Smithers"))  # one word each from the ID and the name
    assert not m.matches(e("@x:h", "Alice"))
    assert not m.matches(e("@x:h", "Malice Smith"))
    assert not Matcher("").matches(e("@x:h", "X"))


def test_full_user_id_prefix():
    assert Matcher("@alice:exa").matches(e("@alice:example.org"))
    assert Matcher("alice:example.org").matches(e("@alice:example.org"))
    assert not Matcher("@lice").matches(e("@alice:example.org"))


def test_literal_wildcards():
    for term in ("%", "_", ".*", "[a-z]", "\\"):
        assert not Matcher(term).matches(e("@a_b:h", "Anything at all")), term
    assert Matcher("50%").matches(e("@x:h", "50% off"))


def test_rank_and_limit():
    entries = [
        e("@b:h", "Annabel"),
        e("@c:h", "Jo Ann"),
        e("@ann:h"),
        e("@d:h", "Ann", "mxc://h/a"),
    ]
    found, limited = rank_results("ann", entries, 3)
    # exact (display name, then localpart without a profile), prefix, then the rest
    assert [x.user_id for x in found] == ["@d:h", "@ann:h", "@b:h"]
    assert limited is True
    assert rank_results("ann", entries, 4)[1] is False


def test_result_json_leaves_out_missing_fields():
    assert result_json(e("@a:h")) == {"user_id": "@a:h"}
    assert result_json(e("@a:h", "A", "mxc://h/x")) == {
        "user_id": "@a:h", "display_name": "A", "avatar_url": "mxc://h/x"
    }  # fmt: skip


def test_prefix_index_gives_a_superset_of_the_matches():
    from bastion.core.user_directory import PrefixIndex

    entries = [
        e("@alice.smith:h", "Ally Smith"), e("@bob:h", "🌸Anna–Lena"), e("@carol:h"),
        e("@x" + "y" * 40 + ":h", "Z" * 40),
    ]  # fmt: skip
    index = PrefixIndex(entries)
    for term in ("smi", "ally", "alice", "@alice.sm", "alice.smith:h", "lena", "anna", "car",
                 "y" * 30, "z" * 30, "nomatch", "mith", "–lena"):  # fmt: skip
        m = Matcher(term)
        expected = {x.user_id for x in entries if m.matches(x)}
        got = {x.user_id for x in index.candidates(m.words)}
        assert expected <= got, term
    assert index.candidates(["mith"]) == []
    assert index.candidates(["nomatch"]) == []
    assert [x.user_id for x in index.candidates(["lena"])] == ["@bob:h"]


def test_prefix_index_keeps_each_entry_of_a_user_and_its_folded_texts():
    from bastion.core.user_directory import PrefixIndex

    # A remote user is indexed once per room membership, each under that room's name.
    index = PrefixIndex([e("@bob:r", "Bob Tern"), e("@bob:r", "Kittiwake"), e("@ann:h", "Ann")])
    assert index.positions(["kitti"]) == [1]
    assert sorted(index.positions(["bob"])) == [0, 1]
    assert index.positions(["bob", "tern"]) in ([0], [0, 1])  # a superset; Matcher decides
    m = Matcher("bob tern")
    assert [p for p in index.positions(m.words) if m.matches_folded(index.folded[p])] == [0]
    assert index.folded[2].local == "ann" and index.folded[2].has_profile
    assert m.sort_key_folded(index.folded[0], "@bob:r") == m.sort_key(e("@bob:r", "Bob Tern"))
