"""The classifier's text features (pure): normalisation, masking, stable hashing."""

from __future__ import annotations

import os
import random
import subprocess
import sys

from bastion.guard.classifier.features import (
    HASH_BITS,
    char_grams,
    char_words,
    featurize,
    gram_bucket,
    html_to_text,
    mask,
    normalise,
    stable_hash,
    tokens,
    word_gram_buckets,
)


def test_normalise_folds_fancy_and_lookalike_letters() -> None:
    assert normalise("𝕗𝕣𝕖𝕖  ᴍᴏɴᴇʏ") == normalise("free money") == "free money"
    assert normalise("Сlаim") == "claim"  # Cyrillic С and а
    assert normalise("Café\tNOW") == "cafe now"


def test_mask_replaces_links_handles_amounts_numbers() -> None:
    masked, urls = mask(
        "Got $9,500 from @best_trader, see https://bit.ly/x or call +44 7700 900123"
    )
    assert urls == ["https://bit.ly/x"]
    assert "zzmoney" in masked and "zzhandle" in masked and "zzurl" in masked
    assert "zzphone" in masked
    assert "9,500" not in masked and "bit.ly" not in masked
    masked, _ = mask("wallet 0x800e9d435dcef7a5d43be2bbc5b5cb280fcdbfff and @alice:example.org")
    assert "zzwallet" in masked and "zzmxid" in masked


def test_same_campaign_different_link_and_amount_same_words() -> None:
    a, _ = mask("I invested $500 and got $5,000 thanks to @trader_anna https://a.example/1")
    b, _ = mask("I invested $700 and got $9,000 thanks to @trader_bella https://b.example/2")
    assert tokens(a) == tokens(b)


def test_stable_hash_is_crc32_and_the_same_in_another_process() -> None:
    import zlib

    assert stable_hash("w:claim") == zlib.crc32(b"w:claim")
    code = (
        "from bastion.guard.classifier.features import featurize;"
        "f = featurize('Claim your FREE airdrop at https://bit.ly/x now!!');"
        "print(list(f.indices), [round(v, 9) for v in f.values])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out1 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True).stdout  # fmt: skip
    env["PYTHONHASHSEED"] = "999"
    out2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True).stdout  # fmt: skip
    here = featurize("Claim your FREE airdrop at https://bit.ly/x now!!")
    assert out1 == out2
    assert out1.strip() == f"{list(here.indices)} {[round(v, 9) for v in here.values]}"


def test_featurize_shape_and_explain_names() -> None:
    f = featurize("Claim your FREE airdrop at https://bit.ly/x now!!", explain=True)
    assert list(f.indices) == sorted(set(f.indices))
    assert all(0 <= i < 1 << HASH_BITS for i in f.indices)
    assert len(f.indices) == len(f.values)
    names = set(f.names.values())
    assert "w:claim" in names and "u:shortener" in names and "m:shortener" in names
    assert featurize("Claim your FREE airdrop").names == {}


def test_vectorised_gram_buckets_equal_the_scalar_hash() -> None:
    # The server hashes all n-grams of a message at once (numpy); explanations and this test
    # hash one n-gram at a time. Both must give the same buckets, for any code point.
    rnd = random.Random(7)
    alphabet = "abcdé😀ß\u0301"
    pool = ["a", "bb", "hello", "𝕗ree", "x\ud800y", "é" * 40]
    pool += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40))) for _ in range(200)]
    for _ in range(40):
        words = char_words(rnd.sample(pool, rnd.randint(1, 25)))
        for word, buckets in zip(words, word_gram_buckets(words), strict=True):
            expected = sorted({gram_bucket(g) for g in char_grams(word)})
            assert buckets.tolist() == expected, word


def test_character_grams_come_once_per_distinct_word() -> None:
    assert char_words(["free", "money", "free", "zzurl", "x" * 50]) == ["free", "money", "x" * 32]
    # Repeating a message's words does not make its features louder: every value stays below
    # its block's weight, however long the repetition.
    f = featurize("win " * 2000 + "free money " * 500)
    assert max(f.values) <= 1.0


def test_empty_and_hostile_text() -> None:
    assert featurize("").indices == ()
    f = featurize("\u202e" * 50 + "\x00" * 10 + "a" * 5000)
    assert len(f.indices) == len(f.values)


def test_html_to_text_keeps_link_targets_drops_reply_fallback() -> None:
    html = (
        "<mx-reply><blockquote>old spam text</blockquote></mx-reply>"
        '<p>hi <a href="https://paypa1.com/x">PayPal</a> &amp; more<br>next</p>'
    )
    text = html_to_text(html)
    assert "old spam" not in text
    assert "https://paypa1.com/x" in text and "PayPal" in text and "& more" in text


def test_hostile_input_takes_linear_time() -> None:
    import time

    for text in ("<a href='" * 6000, "<style>" * 6000, "<" * 60000):
        t0 = time.perf_counter()
        html_to_text(text)
        assert time.perf_counter() - t0 < 0.5, text[:12]
    for text in ("1." * 2000, "a.a" * 1300, "@a" * 2000, "$1" * 2000, "x" * 4000):
        t0 = time.perf_counter()
        featurize(text)
        assert time.perf_counter() - t0 < 0.5, text[:12]


def test_a_lone_surrogate_is_hashed_not_raised() -> None:
    # No event can carry one (the server's JSON parser refuses them), but the pure function
    # never raises on any str.
    assert featurize("free \ud800 money").indices


def test_a_full_word_cache_is_emptied_without_losing_a_message(monkeypatch) -> None:
    import bastion.guard.classifier.features as F

    monkeypatch.setattr(F, "_MAX_WORD_GRAMS", 3)
    monkeypatch.setattr(F, "_WORD_GRAMS", {})
    expected = {
        w: sorted({gram_bucket(g) for g in char_grams(w)}) for w in ["ab", "cd", "ef", "gh"]
    }
    for words in (["ab", "cd"], ["ab", "ef", "gh"], ["cd", "ab"]):
        got = word_gram_buckets(words)
        assert [g.tolist() for g in got] == [expected[w] for w in words]
        assert len(F._WORD_GRAMS) <= 3


def test_links_found_by_the_caller_mask_as_a_second_search_would() -> None:
    from bastion.guard.classifier.urls import extract_urls

    texts = [
        "see HTTPS://Example.COM/Path?X=1). and WWW.Foo.Bar/baz, ok",
        "two  spaces https://a.example/x",  # not single-spaced: searched again
        "ping @alice:example.org about https://b.example",  # a Matrix ID: searched again
        "Café https://c.example/é",  # not ASCII: searched again
        "hxxps://EVIL.example/Login and bit.ly/abc (https://a.b/c_(d))",
        "no links here, $12.50 each",
    ]
    for text in texts:
        assert mask(text, extract_urls(text)) == mask(text), text


def test_a_pasted_hash_is_not_a_wallet() -> None:
    # A 32–64 character hexadecimal run (a commit, a UUID) is kept as text; a base58 address
    # (letters past f) is masked as a wallet. A message of a pasted ID alone was held once.
    commit = "3f5e9a1b2c4d6e8f9a1b2c3d4e5f6a7b8c9d1e2f"
    assert "zzwallet" not in mask(commit)[0]
    assert "zzwallet" not in mask("fixed in " + commit.upper())[0]
    assert mask("send to 1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2 now")[0] == "send to zzwallet now"


def test_a_word_cache_emptied_by_another_thread_loses_no_word(monkeypatch) -> None:
    import bastion.guard.classifier.features as F

    class Emptied(dict):  # every read misses: another thread emptied it just now
        def __getitem__(self, key):
            raise KeyError(key)

    monkeypatch.setattr(F, "_WORD_GRAMS", Emptied())
    got = word_gram_buckets(["ab", "cd"])
    assert [g.tolist() for g in got] == [
        sorted({gram_bucket(g) for g in char_grams(w)}) for w in ("ab", "cd")
    ]
