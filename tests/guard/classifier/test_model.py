"""The shipped content model: plain arrays (no pickle), checked on load, deterministic, and
right on clear spam and ham written for these tests."""

from __future__ import annotations

import json
import pickle
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from bastion.guard.classifier.features import HASH_BITS
from bastion.guard.classifier.model import Model, load_model, shipped_model, verdict_of

WEIGHTS = Path(str(resources.files("bastion.guard.classifier") / "weights"))

SPAM = [
    "You have been selected for a £500 cash prize! Call 09061234567 now to claim, T&Cs apply",
    "Congratulations! You won a $1,000 gift card, text CLAIM to 80555 now to get your prize",
    "I invested $500 with @trader_anna_fx and got $6,800 back in 7 days, DM her now and thank "
    "me later",
    "URGENT: your account has been locked. Verify your identity at "
    "https://secure-chase-verify.example/login to restore access",
    "Free crypto airdrop is LIVE! Connect your wallet at https://claim-drop.example and claim "
    "1000 $TOKEN before it ends",
]
HAM = [
    "has anyone tried the new react hooks? I pushed my code to https://github.com/me/app if "
    "you want to look",
    "lunch at 12? the place on the corner costs about $15 and they have vegan options",
    "I think the bug is in line 42, you forgot to return the value from the callback",
    "thanks everyone for coming to the meetup yesterday, slides are on the wiki",
]


def test_the_weights_directory_holds_plain_files_only() -> None:
    names = sorted(p.name for p in WEIGHTS.iterdir() if not p.name.startswith("."))
    assert names == ["eval.json", "model.f32", "model.json"]
    assert (WEIGHTS / "model.f32").stat().st_size == 4 << HASH_BITS
    assert sum(p.stat().st_size for p in WEIGHTS.iterdir()) < 3_000_000


def test_load_never_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)
    model = load_model(WEIGHTS)
    assert model.weights.dtype == np.float32 and model.weights.shape == (1 << HASH_BITS,)
    assert 0 < model.hold <= model.block < 1


def test_tampered_or_mismatched_weights_are_refused(tmp_path: Path) -> None:
    for name in ("model.f32", "model.json"):
        shutil.copy(WEIGHTS / name, tmp_path / name)
    blob = bytearray((tmp_path / "model.f32").read_bytes())
    blob[100] ^= 0xFF
    (tmp_path / "model.f32").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="weights_sha256"):
        load_model(tmp_path)
    shutil.copy(WEIGHTS / "model.f32", tmp_path / "model.f32")
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["features_version"] = 999
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="other features"):
        load_model(tmp_path)
    meta["format"] = "pickle"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a guard classifier"):
        load_model(tmp_path)


@pytest.mark.parametrize("text", SPAM)
def test_clear_spam_is_not_ok(text: str) -> None:
    m = shipped_model()
    s = m.score(text)
    assert verdict_of(s.score, m.hold, m.block) != "ok", (s.score, m.hold)


@pytest.mark.parametrize("text", HAM)
def test_clear_ham_is_ok(text: str) -> None:
    m = shipped_model()
    s = m.score(text)
    assert verdict_of(s.score, m.hold, m.block) == "ok", s.score


def test_homograph_link_is_spam_and_explained() -> None:
    m = shipped_model()
    s = m.score("please log in at https://xn--pypal-4ve.com/account to keep it open", explain=True)
    assert verdict_of(s.score, m.hold, m.block) == "spam"
    assert any("imitates paypal.com" in r for r in s.reasons)
    assert any(r.startswith("feature ") for r in s.reasons)
    assert "homograph:xn--pypal-4ve.com" in s.url_rules


def test_lookalike_link_is_held_at_least() -> None:
    m = shipped_model()
    s = m.score("see you at https://paypa1.com later")
    assert verdict_of(s.score, m.hold, m.block) in ("hold", "spam")


def test_scores_are_deterministic_and_explain_does_not_change_them() -> None:
    m = shipped_model()
    for text in SPAM + HAM:
        a, b = m.score(text), m.score(text, explain=True)
        assert a.score == b.score == m.score(text).score
        assert 0.0 <= a.score <= 1.0


def test_the_fast_score_is_the_model_on_the_feature_vector() -> None:
    # Scoring sums the weights block by block, with each word's n-gram weights summed once
    # and kept; training and explanations use featurize's vector. Both must give one score,
    # the first time a word is seen and the next.
    from bastion.guard.classifier.features import featurize

    rng = np.random.default_rng(3)
    model = Model(rng.normal(size=1 << HASH_BITS).astype(np.float32), -0.5, 0.9, 0.99)
    texts = SPAM + HAM + ["", "x", "a" * 5000, "free free free money", "Café 𝕗𝕣𝕖𝕖 ß"]
    for _ in range(2):
        for text in texts:
            f = featurize(text)
            z = model.bias + sum(
                float(model.weights[i]) * v for i, v in zip(f.indices, f.values, strict=True)
            )
            expected = 1.0 / (1.0 + np.exp(-z))
            assert model.model_score(text)[0] == pytest.approx(expected, abs=1e-9), text
            assert model.model_score(text, explain=True)[0] == pytest.approx(expected, abs=1e-9)


def test_a_full_cache_of_word_sums_is_emptied_without_losing_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bastion.guard.classifier.model as M

    rng = np.random.default_rng(5)
    model = Model(rng.normal(size=1 << HASH_BITS).astype(np.float32), 0.0, 0.9, 0.99)
    texts = ["alpha beta", "alpha gamma delta", "beta alpha"]
    expected = [model.model_score(t)[0] for t in texts]
    monkeypatch.setattr(M, "_MAX_CACHED", 3)
    fresh = Model(model.weights, 0.0, 0.9, 0.99)
    assert [fresh.model_score(t)[0] for t in texts] == expected
    assert len(fresh._word_sums) <= 3


def test_a_pasted_id_alone_is_not_held() -> None:
    # A UUID or commit hash with no 0 in it once read as a wallet address and was held.
    m = shipped_model()
    for text in ("3f5e9a1b2c4d6e8f9a1b2c3d4e5f6a7b", "3f5e9a1b2c4d6e8f9a1b2c3d4e5f6a7b8c9d1e2f"):
        assert verdict_of(m.score(text).score, m.hold, m.block) == "ok", text


def test_explanations_name_character_grams_on_demand() -> None:
    # Only the top features' n-grams are named (hashing every n-gram of a long message one at
    # a time cost ~10 ms); one among them is named as it is written.
    from bastion.guard.classifier.features import gram_bucket

    weights = np.zeros(1 << HASH_BITS, dtype=np.float32)
    weights[gram_bucket(" fre")] = 5.0
    model = Model(weights, -1.0, 0.9, 0.99)
    s = model.score("free money for everyone", explain=True)
    assert any(r.startswith("feature chars:_fre (+") for r in s.reasons), s.reasons


def test_a_cache_emptied_by_another_thread_mid_score_loses_nothing() -> None:
    # Servers in one process share the shipped model; one may empty a full cache while
    # another scores. A cache whose every read misses stands for that moment.
    class Emptied(dict):  # type: ignore[type-arg]
        def __getitem__(self, key: object) -> object:
            raise KeyError(key)

    rng = np.random.default_rng(9)
    model = Model(rng.normal(size=1 << HASH_BITS).astype(np.float32), 0.0, 0.9, 0.99)
    expected = model.model_score("alpha beta gamma")[0]
    racing = Model(model.weights, 0.0, 0.9, 0.99)
    racing._name_weights = Emptied()
    racing._word_sums = Emptied()
    racing._word_counts = Emptied()
    assert racing.model_score("alpha beta gamma")[0] == expected


def test_model_refuses_bad_shapes_and_thresholds() -> None:
    with pytest.raises(ValueError):
        Model(np.zeros(10, dtype=np.float32), 0.0, 0.5, 0.9)
    with pytest.raises(ValueError):
        Model(np.zeros(1 << HASH_BITS, dtype=np.float32), 0.0, 0.9, 0.5)


def test_verdict_of() -> None:
    assert verdict_of(0.95, 0.5, 0.9) == "spam"
    assert verdict_of(0.9, 0.5, 0.9) == "hold"
    assert verdict_of(0.5, 0.5, 0.9) == "ok"
