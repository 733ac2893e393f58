"""Training the content classifier, reproducibly (the shipped weights come from this command).

    python -m bastion.guard.classifier.train --datasets /work/shared/datasets \\
        --out src/bastion/guard/classifier/weights

1. Loads the labelled sets (see MODEL_CARD.md): every row becomes (source, label, text).
   The older sets (SMS, YouTube, Davidson) are de-duplicated on normalised text first.
2. Groups near-duplicates across all sets: rows whose masked word sets (links, numbers,
   handles masked) overlap by Jaccard > 0.5 are joined (MinHash, banded, then checked), and the
   ``group`` columns of the two SMS sets join their rows too. A group is a campaign or template.
3. Splits by group, never by row: a group goes to the test split when a stable hash of its id
   falls under the source's test fraction; for YouTube, every group touching one whole video
   (Shakira) is the test split, as the set's authors suggest. No near-duplicate crosses.
4. Fits NB-LR on the hashed features of the training split: each feature is scaled by its
   naive-Bayes log-count ratio (how much more often it is in spam than in ham, smoothed, from
   the training rows only; Wang & Manning 2012, "Baselines and Bigrams"), then a logistic
   regression (scikit-learn, liblinear, C=1, fixed seed) is fitted on the scaled features. Every
   (source, label) cell weighs the same in total, so no set dominates and spam and ham weigh
   the same. The shipped weight of a feature is its coefficient times its ratio: scoring is
   the same dot product, at no extra cost.
5. Picks the shipped thresholds on out-of-fold scores of the training split (5 group folds):
   ``hold`` keeps every source's ham (with 100+ ham rows) at or below 1 % false positives
   there, ``block`` every source's (with 1,000+) at or below 0.1 %.
   The test split is not looked at for this.
6. Writes ``model.f32`` (little-endian float32 weights) and ``model.json`` (bias, thresholds,
   feature version, SHA-256 of the weights), and ``eval.json``: per-source figures of the
   shipped scoring function (model + URL rules) on the held-out split, and the split itself
   (one bit per row) so the evaluation can be re-run without regrouping. Same inputs → the
   same bytes.

scikit-learn is needed only here (the ``train`` extra); the server needs numpy only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import re
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bastion.guard.classifier.features import (
    FEATURES_VERSION,
    HASH_BITS,
    featurize,
    html_to_text,
    mask,
)

SEED = 20261206
#: The share of each source's groups held out for evaluation.
TEST_FRACTION = {"smishx_sms": 0.5, "thai_sms_gateway_english": 0.5}
DEFAULT_TEST_FRACTION = 0.25
YOUTUBE_TEST_VIDEO = "Shakira"
C = 1.0
#: Add-one smoothing of the naive-Bayes counts.
NB_ALPHA = 1.0
FOLDS = 5
HOLD_FPR = 0.01
BLOCK_FPR = 0.001

SOURCES = (
    "sms_spam_collection",
    "youtube_spam_collection",
    "hate_offensive_davidson",
    "fcc_gitter_chat",
    "scamspot_instagram_comments",
    "janitr_x_posts",
    "smishx_sms",
    "thai_sms_gateway_english",
)


@dataclass
class Row:
    source: str
    label: int  # 1 spam, 0 ham
    text: str
    #: The set's own near-duplicate group (the two SMS sets), else "".
    hint: str = ""
    #: The YouTube video, else "".
    video: str = ""
    group: str = ""
    test: bool = False


def _norm_key(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def _tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]


def load_rows(root: Path) -> list[Row]:
    """Every labelled row of the eight sets, older sets de-duplicated (first label kept)."""
    rows: list[Row] = []
    older: list[Row] = []
    for line in (
        (root / "sms_spam_collection" / "SMSSpamCollection.tsv")
        .read_text(encoding="utf-8")
        .splitlines()
    ):
        label, _, text = line.partition("\t")
        older.append(Row("sms_spam_collection", int(label == "spam"), text))
    with open(root / "youtube_spam_collection" / "youtube_spam.csv", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            text = html_to_text(rec["content"])
            older.append(Row("youtube_spam_collection", int(rec["label"] == "spam"), text,
                             video=rec["video"]))  # fmt: skip
    with open(root / "hate_offensive_davidson" / "labeled_data.csv", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            # Not spam: abusive or not, a tweet here is ham for the spam task (see MODEL_CARD).
            older.append(Row("hate_offensive_davidson", 0, html_to_text(rec["tweet"])))
    seen: set[tuple[str, str]] = set()
    for row in older:
        key = (row.source, _norm_key(row.text))
        if key in seen or not row.text.strip():
            continue
        seen.add(key)
        rows.append(row)
    for name in SOURCES[3:]:
        for rec in _tsv(root / name / f"{name}.tsv"):
            rows.append(Row(name, int(rec["label"] == "spam"), rec["text"],
                            hint=rec.get("group", "")))  # fmt: skip
    return rows


# ----------------------------------------------------------------------------------------------
# Near-duplicate groups (MinHash over masked word sets, banded, checked with the exact Jaccard)
# ----------------------------------------------------------------------------------------------
_PRIME = (1 << 61) - 1
_PERMS = 24
_BANDS = 8
#: How many earlier members of a MinHash bucket a row is compared with.
_BUCKET_CHECKS = 32


def _word_set(text: str) -> frozenset[str]:
    masked, _ = mask(text)
    words = re.findall(r"[a-z]{2,}", masked)
    return frozenset(w for w in words if not w.startswith("zz"))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_groups(rows: Sequence[Row], threshold: float = 0.5) -> None:
    """Set ``row.group`` for every row: near-duplicates (masked word-set Jaccard above
    ``threshold``, or the same set-provided group) share one group id."""
    rng = np.random.RandomState(SEED)
    a = rng.randint(1, 1 << 31, size=_PERMS).astype(np.uint64)
    b = rng.randint(0, 1 << 31, size=_PERMS).astype(np.uint64)
    uf = _UnionFind(len(rows))
    sets = [_word_set(r.text) for r in rows]
    buckets: dict[tuple[int, bytes], list[int]] = {}
    exact: dict[str, int] = {}
    same_words: dict[frozenset[str], int] = {}
    hints: dict[tuple[str, str], int] = {}
    rows_per_band = _PERMS // _BANDS
    for i, (row, words) in enumerate(zip(rows, sets, strict=True)):
        if row.hint:
            j = hints.setdefault((row.source, row.hint), i)
            uf.union(i, j)
        if len(words) < 3:
            masked, _ = mask(row.text)
            j = exact.setdefault(masked, i)
            uf.union(i, j)
            continue
        uf.union(i, same_words.setdefault(words, i))
        h = np.array([zlib.crc32(w.encode()) for w in sorted(words)], dtype=np.uint64)
        sig = ((h[:, None] * a[None, :] + b[None, :]) % np.uint64(_PRIME)).min(axis=0)
        for band in range(_BANDS):
            key = (band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes())
            members = buckets.setdefault(key, [])
            # Checked against (up to) the first members of the bucket, not only the first.
            for j in members[:_BUCKET_CHECKS]:
                if uf.find(i) != uf.find(j):
                    inter = len(words & sets[j])
                    if inter / (len(words) + len(sets[j]) - inter) > threshold:
                        uf.union(i, j)
            members.append(i)
    for i, row in enumerate(rows):
        root = uf.find(i)
        row.group = hashlib.sha256(f"{rows[root].source}\n{rows[root].text}".encode()).hexdigest()[
            :16
        ]


def assign_split(rows: Sequence[Row]) -> None:
    """Mark the held-out rows (``row.test``): whole groups, by source (see the module doc)."""
    youtube_test = {r.group for r in rows if r.video == YOUTUBE_TEST_VIDEO}
    by_group_source: dict[str, str] = {}
    for r in rows:
        by_group_source.setdefault(r.group, r.source)
    for r in rows:
        if r.group in youtube_test:
            r.test = True
            continue
        if r.source == "youtube_spam_collection":
            r.test = False
            continue
        # A group's fate is decided once, by the source of its first row and its id.
        source = by_group_source[r.group]
        frac = TEST_FRACTION.get(source, DEFAULT_TEST_FRACTION)
        r.test = zlib.crc32(f"{SEED}:{r.group}".encode()) % 10_000 < frac * 10_000


def load_split(root: Path) -> list[Row]:
    """The rows of every set with their groups and their split."""
    rows = load_rows(root)
    assign_groups(rows)
    assign_split(rows)
    return rows


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------
def matrix(texts: Iterable[str]) -> Any:
    """The hashed feature matrix (scipy CSR) of the texts."""
    from scipy.sparse import csr_matrix  # type: ignore[import-untyped]

    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for text in texts:
        f = featurize(text)
        indices.extend(f.indices)
        data.extend(f.values)
        indptr.append(len(indices))
    return csr_matrix(
        (np.array(data, dtype=np.float64), np.array(indices, dtype=np.int64), np.array(indptr)),
        shape=(len(indptr) - 1, 1 << HASH_BITS),
    )


def sample_weights(rows: Sequence[Row]) -> np.ndarray:
    """Every (source, label) cell weighs the same in total (spam and ham the same): a row
    weighs one over its cell's size."""
    cells: dict[tuple[str, int], int] = {}
    for r in rows:
        cells[(r.source, r.label)] = cells.get((r.source, r.label), 0) + 1
    per_label = [sum(1 for k in cells if k[1] == lab) for lab in (0, 1)]
    w = np.array([1.0 / cells[(r.source, r.label)] / per_label[r.label] for r in rows])
    return w * (len(rows) / w.sum())


def nb_ratios(x: Any, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each feature's naive-Bayes log-count ratio on weighted rows: log of its (smoothed)
    share of the spam rows' features over its share of the ham rows'."""
    present = (x != 0).astype(np.float64)
    p = NB_ALPHA + present[y == 1].T @ w[y == 1]
    q = NB_ALPHA + present[y == 0].T @ w[y == 0]
    return np.asarray(np.log((p / p.sum()) / (q / q.sum())), dtype=np.float64)


def fit(x: Any, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """NB-LR: the log-count ratios, a logistic regression on the features scaled by them; the
    weights returned are the coefficients times the ratios (for the unscaled features)."""
    from scipy.sparse import diags
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    r = nb_ratios(x, y, w)
    model = LogisticRegression(C=C, solver="liblinear", random_state=SEED, max_iter=1000, tol=1e-6)
    model.fit((x @ diags(r)).tocsr(), y, sample_weight=w)
    return (model.coef_[0] * r).astype(np.float32), float(model.intercept_[0])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def scores_of(x: Any, coef: np.ndarray, bias: float) -> np.ndarray:
    return _sigmoid(x @ coef.astype(np.float64) + np.float64(np.float32(bias)))


def _fold_of(group: str) -> int:
    return zlib.crc32(f"fold:{SEED}:{group}".encode()) % FOLDS


def threshold_at_fpr(ham_scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold (a score above it is flagged) keeping the ham share flagged at
    or below ``fpr``."""
    if len(ham_scores) == 0:
        return 0.0
    s = np.sort(ham_scores)[::-1]
    allowed = math.floor(fpr * len(s))
    return float(s[allowed]) if allowed < len(s) else 0.0


def pick_thresholds(rows: Sequence[Row], oof: np.ndarray) -> tuple[float, float]:
    """``hold`` and ``block`` from out-of-fold training scores: the strictest per-source
    thresholds for 1 % and 0.1 % ham flagged."""
    hold = block = 0.0
    for source in SOURCES:
        ham = np.array([oof[i] for i, r in enumerate(rows) if r.source == source and not r.label])
        # A source needs enough ham for the rate to mean anything: 100 for 1 %, 1,000 for
        # 0.1 % (smishx and thai have too few: they are evaluated, not used to set these).
        if len(ham) >= 100:
            hold = max(hold, threshold_at_fpr(ham, HOLD_FPR))
        if len(ham) >= 1000:
            block = max(block, threshold_at_fpr(ham, BLOCK_FPR))
    ham_all = np.array([oof[i] for i, r in enumerate(rows) if not r.label])
    if hold == 0.0:  # no source has enough ham (a small subset): all ham together
        hold = threshold_at_fpr(ham_all, HOLD_FPR)
    if block == 0.0:
        block = threshold_at_fpr(ham_all, BLOCK_FPR)
    hold = min(max(hold, 0.001), 0.99)
    return round(hold, 4), round(min(max(block, hold), 0.999), 4)


def metrics(labels: np.ndarray, scores: np.ndarray, hold: float, block: float) -> dict[str, Any]:
    """Per-source figures: recall and precision at 1 % FPR (the source's own threshold), and
    recall, precision and FPR at the shipped thresholds."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    out: dict[str, Any] = {"spam": int(len(pos)), "ham": int(len(neg))}

    def at(t: float) -> dict[str, float | None]:
        tp = int((pos > t).sum())
        fp = int((neg > t).sum())
        return {
            "recall": round(tp / len(pos), 4) if len(pos) else None,
            "precision": round(tp / (tp + fp), 4) if tp + fp and len(pos) else None,
            "fpr": round(fp / len(neg), 4) if len(neg) else None,
        }

    if len(neg):
        t1 = threshold_at_fpr(neg, 0.01)
        out["at_1pct_fpr"] = {"threshold": round(t1, 4), **at(t1)}
    out["at_hold"] = at(hold)
    out["at_block"] = at(block)
    return out


def evaluate(rows: Sequence[Row], scores: np.ndarray, hold: float, block: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for source in SOURCES:
        idx = [i for i, r in enumerate(rows) if r.source == source]
        labels = np.array([rows[i].label for i in idx])
        result[source] = metrics(labels, scores[idx], hold, block)
    return result


def split_bitmap(rows: Sequence[Row]) -> dict[str, str]:
    """The split as one bit per row (1: held out) per source, in :func:`load_rows` order,
    hex-encoded; with a digest of the rows' texts so a reader knows it applies."""
    out: dict[str, str] = {}
    for source in SOURCES:
        bits = [r.test for r in rows if r.source == source]
        value = 0
        for i, b in enumerate(bits):
            value |= int(b) << i
        out[source] = f"{len(bits)}:{value:x}"
    out["rows_sha256"] = rows_digest(rows)
    return out


def rows_digest(rows: Sequence[Row]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r.source}\t{r.label}\t{r.text}\n".encode())
    return h.hexdigest()


def apply_bitmap(rows: Sequence[Row], bitmap: dict[str, str]) -> None:
    """Mark ``row.test`` from a :func:`split_bitmap` (ValueError if the rows differ)."""
    if bitmap.get("rows_sha256") != rows_digest(rows):
        raise ValueError("the datasets differ from those the split was made on")
    for source in SOURCES:
        n, _, hexval = bitmap[source].partition(":")
        value = int(hexval, 16)
        members = [r for r in rows if r.source == source]
        if len(members) != int(n):
            raise ValueError(f"{source}: row count differs from the split's")
        for i, r in enumerate(members):
            r.test = bool(value >> i & 1)


def shipped_scores(model_dir: Path | None, rows: Sequence[Row]) -> np.ndarray:
    """The scores of the rows by the shipped scoring function (the model and the URL rules,
    default brands and thresholds), as the server computes them."""
    from bastion.guard.classifier import parse_classifier_config
    from bastion.guard.classifier.model import load_model
    from bastion.guard.content import score_text

    model = load_model(model_dir)
    config = parse_classifier_config({})
    return np.array(
        [score_text(model, config, r.text, hold=model.hold, block=model.block).score
         for r in rows]
    )  # fmt: skip


def train(
    root: Path, out: Path, *, limit: int | None = None, log: Any = sys.stderr
) -> dict[str, Any]:
    """Train and write the model into ``out``; ``limit`` keeps only the first rows per source
    (for the reproducibility test; they are then grouped and split on their own). Returns the
    evaluation."""
    rows = load_rows(root)
    if limit is not None:
        kept: list[Row] = []
        per: dict[str, int] = {}
        for r in rows:
            per[r.source] = per.get(r.source, 0) + 1
            if per[r.source] <= limit:
                kept.append(r)
        rows = kept
    assign_groups(rows)
    assign_split(rows)
    train_rows = [r for r in rows if not r.test]
    test_rows = [r for r in rows if r.test]
    print(f"rows: {len(rows)} train {len(train_rows)} test {len(test_rows)}", file=log)
    x = matrix(r.text for r in train_rows)
    y = np.array([r.label for r in train_rows])
    w = sample_weights(train_rows)
    oof = np.zeros(len(train_rows))
    folds = np.array([_fold_of(r.group) for r in train_rows])
    for k in range(FOLDS):
        tr, va = folds != k, folds == k
        if len(set(y[tr])) < 2 or not va.any():
            continue
        coef, bias = fit(x[tr], y[tr], w[tr])
        oof[va] = scores_of(x[va], coef, bias)
    hold, block = pick_thresholds(train_rows, oof)
    coef, bias = fit(x, y, w)
    out.mkdir(parents=True, exist_ok=True)
    weights = coef.astype("<f4").tobytes()
    (out / "model.f32").write_bytes(weights)
    meta = {
        "format": "bastion-guard-classifier",
        "features_version": FEATURES_VERSION,
        "hash_bits": HASH_BITS,
        "bias": float(np.float32(bias)),
        "thresholds": {"hold": hold, "block": block},
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "trained_on": {s: sum(1 for r in train_rows if r.source == s) for s in SOURCES},
        "seed": SEED,
        "C": C,
        "method": "NB-LR (naive-Bayes log-count ratios, logistic regression)",
        "nb_alpha": NB_ALPHA,
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    test_scores = shipped_scores(out, test_rows)
    result = {
        "split": "held out by source and near-duplicate group (see MODEL_CARD.md)",
        "thresholds": {"hold": hold, "block": block},
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "test": evaluate(test_rows, test_scores, hold, block),
        "train_oof": evaluate(train_rows, oof, hold, block),
        "split_bitmap": split_bitmap(rows),
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The per-source figures as the model card's table."""
    lines = [
        "| source | test spam / ham | recall @1% FPR | precision @1% FPR | recall @hold | "
        "precision @hold | FPR @hold | recall @block | FPR @block |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    def fpr(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.2f} %"

    for source in SOURCES:
        m = result["test"][source]
        one = m.get("at_1pct_fpr", {})
        lines.append(
            f"| {source} | {m['spam']} / {m['ham']} | {pct(one.get('recall'))} | "
            f"{pct(one.get('precision'))} | {pct(m['at_hold']['recall'])} | "
            f"{pct(m['at_hold']['precision'])} | {fpr(m['at_hold']['fpr'])} | "
            f"{pct(m['at_block']['recall'])} | {fpr(m['at_block']['fpr'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="rows per source (tests)")
    args = parser.parse_args(argv)
    result = train(args.datasets, args.out, limit=args.limit)
    print(markdown_table(result))
    print(json.dumps(result["thresholds"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
