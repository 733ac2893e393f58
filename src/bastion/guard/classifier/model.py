"""The shipped content model (pure): plain arrays in, a score and its reasons out.

``weights/model.f32`` holds ``2**hash_bits`` little-endian float32 weights (one per feature
bucket, :mod:`bastion.guard.classifier.features`) and ``weights/model.json`` the bias, the
default thresholds, the feature version the weights need and the SHA-256 of the weights file.
Nothing is unpickled and nothing is downloaded: :func:`load_model` reads those two files and
checks them.

:meth:`Model.score` is the one scoring function: the server
(:class:`bastion.guard.content.ContentClassifier`), ``bastion guard score`` and the
evaluation all call it. The score is the logistic of the linear model, 0..1, higher is more
likely spam; with ``explain`` the features that pushed it up most come back as reasons.
URL rules (look-alike domains, shorteners) are scored separately (:func:`url_reasons`) and
combined by :func:`verdict_of`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bastion.guard.classifier.features import (
    FEATURES_VERSION,
    HASH_BITS,
    analyse,
    block_scales,
    featurize,
    gram_names,
    name_bucket,
    word_gram_buckets,
)
from bastion.guard.classifier.urls import DEFAULT_BRANDS, extract_urls, url_findings

__all__ = [
    "FORMAT",
    "Model",
    "Scored",
    "load_model",
    "shipped_model",
    "url_reasons",
    "verdict_of",
]

FORMAT: Final = "bastion-guard-classifier"
#: URL rules that make a message spam on their own (a brand's name in other letters, a host
#: hidden behind a user name) ...
STRONG_URL_RULES: Final = frozenset({"homograph", "userinfo"})
#: ... those that hold it for a moderator at least (a near-miss spelling of a brand, a brand's
#: name with lure words: precise, but "gooogle" can be a joke) ...
HOLD_URL_RULES: Final = frozenset({"lookalike", "brand_words"})
#: ... and the rest only add a reason (a shortener hides the destination; ham uses them too).
#: The most feature names and words whose weights a model keeps (each; about 100 bytes an
#: entry).
_MAX_CACHED: Final = 65_536


@dataclass(frozen=True, slots=True)
class Scored:
    """One message's score (0..1), the model's own score, and the reasons (strongest first):
    each a short string naming a feature (``feature w:claim (+0.41)``) or a URL rule."""

    score: float
    model_score: float
    reasons: tuple[str, ...]
    url_rules: tuple[str, ...]


class Model:
    """A loaded model: weights (float32, ``2**hash_bits``), bias, default thresholds."""

    def __init__(
        self, weights: npt.NDArray[np.float32], bias: float, hold: float, block: float
    ) -> None:
        if weights.shape != (1 << HASH_BITS,):
            raise ValueError("the weights do not match the feature space")
        if not 0.0 < hold <= block < 1.0:
            raise ValueError("thresholds must satisfy 0 < hold <= block < 1")
        self.weights = weights
        self.bias = float(bias)
        self.hold = float(hold)
        self.block = float(block)
        self._w64 = weights.astype(np.float64)
        #: Per feature name, its weight; per word, the sum of the weights of its character
        #: n-grams and how many there are (bounded: cleared when full; names and words recur
        #: from message to message).
        self._name_weights: dict[str, float] = {}
        self._word_sums: dict[str, float] = {}
        self._word_counts: dict[str, int] = {}

    def _names_sum(self, names: list[str]) -> float:
        """The summed weights of distinct feature names."""
        weights = self._name_weights
        try:
            return sum(map(weights.__getitem__, names))
        except KeyError:
            # (summed from what this call read or computed, in the same order: another
            # thread's server may empty the shared cache meanwhile)
            if len(weights) + len(names) > _MAX_CACHED:
                weights.clear()
            w64 = self._w64
            total = 0.0
            for name in names:
                w = weights.get(name)
                if w is None:
                    w = weights[name] = float(w64[name_bucket(name)])
                total += w
            return total

    def _char_sums(self, words: list[str]) -> tuple[float, int]:
        """The summed weights of the words' character n-grams and their number."""
        sums, counts = self._word_sums, self._word_counts
        try:
            return sum(map(sums.__getitem__, words)), sum(map(counts.__getitem__, words))
        except KeyError:
            if len(sums) + len(words) > _MAX_CACHED:
                sums.clear()
                counts.clear()
            known: dict[str, tuple[float, int]] = {}
            for word in words:
                s, n = sums.get(word), counts.get(word)
                if s is not None and n is not None:
                    known[word] = (s, n)
            missing = [w for w in words if w not in known]
            w64 = self._w64
            for word, buckets in zip(missing, word_gram_buckets(missing, cache=False), strict=True):
                known[word] = (float(w64[buckets].sum()), len(buckets))
                sums[word], counts[word] = known[word]
            total = 0.0
            count = 0
            for word in words:
                s, n = known[word]
                total += s
                count += n
            return total, count

    def model_score(
        self, text: str, *, explain: bool = False, links: list[str] | None = None
    ) -> tuple[float, list[str]]:
        """The linear model's score of ``text`` and (with ``explain``) its top features. The
        score is the model's on :func:`featurize`'s vector, summed block by block. ``links``:
        the text's links (:func:`extract_urls`), when the caller has them already."""
        if explain:
            return self._explained(text)
        an = analyse(text, links)
        char_sum, n_chars = self._char_sums(an.char_words)
        sw, sc, sm = block_scales(len(an.word_names), n_chars, len(an.meta_names))
        z = (
            self.bias
            + sc * char_sum
            + sw * self._names_sum(an.word_names)
            + sm * self._names_sum(an.meta_names)
        )
        return _sigmoid(z), []

    def _explained(self, text: str) -> tuple[float, list[str]]:
        f = featurize(text, explain=True)
        if not f.indices:
            return _sigmoid(self.bias), []
        idx = np.fromiter(f.indices, dtype=np.int64, count=len(f.indices))
        vals = np.fromiter(f.values, dtype=np.float64, count=len(f.values))
        contrib = self._w64[idx] * vals
        score = _sigmoid(float(contrib.sum()) + self.bias)
        order = [i for i in np.argsort(-contrib, kind="stable")[:5] if contrib[i] > 0.05]
        names = dict(f.names)
        unnamed = {int(idx[i]) for i in order if int(idx[i]) not in names}
        names.update(gram_names(f.char_words, unnamed))
        reasons = [f"feature {names.get(int(idx[i]), '?')} ({contrib[i]:+.2f})" for i in order]
        return score, reasons

    def score(
        self,
        text: str,
        *,
        explain: bool = False,
        brands: Iterable[str] = DEFAULT_BRANDS,
        hold: float | None = None,
        block: float | None = None,
        urls: list[str] | None = None,
    ) -> Scored:
        """The score of one message's text: the model's score, raised above the ``block``
        threshold when a strong URL rule fires (:data:`STRONG_URL_RULES`) and above ``hold``
        when a hold rule does (:data:`HOLD_URL_RULES`); with the reasons (URL rules first).
        ``hold``/``block``: the thresholds in force (default: the model's); ``urls``: the
        text's links (:func:`extract_urls`) when the caller has them already."""
        hold = self.hold if hold is None else hold
        block = self.block if block is None else block
        mscore, feats = self.model_score(text, explain=explain, links=urls)
        rules, url_texts = url_reasons(text, brands, urls)
        fired = {r.split(":", 1)[0] for r in rules}
        score = mscore
        if fired & STRONG_URL_RULES:
            score = max(score, block + (1.0 - block) / 2)
        elif fired & HOLD_URL_RULES:
            score = max(score, (hold + block) / 2)
        reasons = tuple(url_texts) + (tuple(feats) if explain else ())
        return Scored(round(score, 6), round(mscore, 6), reasons, tuple(rules))


def verdict_of(score: float, hold: float, block: float) -> str:
    """``spam`` above ``block``, ``hold`` above ``hold``, else ``ok``."""
    if score > block:
        return "spam"
    if score > hold:
        return "hold"
    return "ok"


def url_reasons(
    text: str, brands: Iterable[str] = DEFAULT_BRANDS, urls: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """The URL rules firing in ``text``: as ``rule:host`` codes and as sentences. ``urls``:
    the text's links when the caller has them already (:func:`extract_urls` of ``text``)."""
    codes: list[str] = []
    texts: list[str] = []
    brand_list = list(brands)
    for url in extract_urls(text) if urls is None else urls:
        for finding in url_findings(url, brand_list):
            code = f"{finding.rule}:{finding.host}"
            if code not in codes:
                codes.append(code)
                texts.append(f"url {finding.describe()}")
    return codes, texts


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def load_model(directory: Path | None = None) -> Model:
    """Read ``model.json`` and ``model.f32`` from ``directory`` (default: the shipped weights)
    and check them (format, feature version, size, SHA-256). Raises ValueError."""
    if directory is None:
        base = resources.files("bastion.guard.classifier") / "weights"
        meta_raw = (base / "model.json").read_bytes()
        blob = (base / "model.f32").read_bytes()
    else:
        meta_raw = (directory / "model.json").read_bytes()
        blob = (directory / "model.f32").read_bytes()
    meta: Mapping[str, Any] = json.loads(meta_raw)
    if meta.get("format") != FORMAT:
        raise ValueError("not a guard classifier model")
    if meta.get("features_version") != FEATURES_VERSION or meta.get("hash_bits") != HASH_BITS:
        raise ValueError("the model was trained for other features; retrain it")
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise ValueError("model.f32 does not match model.json (weights_sha256)")
    weights = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(weights)):
        raise ValueError("the weights are not all finite")
    thresholds = meta.get("thresholds", {})
    return Model(
        weights, float(meta["bias"]), float(thresholds["hold"]), float(thresholds["block"])
    )


_SHIPPED: list[Model] = []


def clear_classifier_caches() -> None:
    """Forget every word the classifier has kept from messages it scored (its per-word and
    per-name caches; an erasure calls it: the words of erased messages are their keys)."""
    from bastion.guard.classifier import features

    features.name_bucket.cache_clear()
    features._WORD_GRAMS.clear()  # noqa: SLF001 - the features module's own cache
    for model in _SHIPPED:
        model._name_weights.clear()  # noqa: SLF001
        model._word_sums.clear()  # noqa: SLF001
        model._word_counts.clear()  # noqa: SLF001


def shipped_model() -> Model:
    """The shipped model, loaded once per process."""
    if not _SHIPPED:
        _SHIPPED.append(load_model())
    return _SHIPPED[0]
