"""The content classifier in the server (``hs.guard.classifier``): the text of a readable event,
scored by the shipped model, turned into guard signals.

It reads only what the server may read: never an ``m.room.encrypted`` event and never any
event of a room whose state has ``m.room.encryption`` (:attr:`EventContext.readable`); there
it returns no signal at all. The text is what a client shows (Client-Server API, "m.room.message
msgtypes": ``body``, and ``formatted_body`` when ``format`` is ``org.matrix.custom.html``, with
the HTML stripped and link targets kept; an edit's ``m.new_content``; extensible events'
``m.text``), plus ``m.room.topic``'s ``topic`` and ``m.room.name``'s ``name``. When the plain
and the HTML text differ, both are scored and the higher score counts (a client shows the
HTML one; a spammer may hide the payload there).

Signals (:mod:`bastion.guard.signals`):

- ``classifier``: ``block`` above the block threshold, ``hold`` above the hold threshold,
  with the score, the thresholds, the top features and the URL rules as evidence. Thresholds:
  the room's guard settings (``classifier.hold``/``block``/``enabled``), else
  ``[guard.classifier]``, else the shipped model's. In shadow mode (``shadow = true``) the
  same verdict comes as a ``warn`` naming what would have been done.
- ``classifier.url``: ``warn`` for links to domains outside the well-known list from an
  account younger than ``new_account_days``; ``info`` for a link shortener.

The model is loaded once, when the guard starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bastion.guard.classifier import ClassifierConfig
from bastion.guard.classifier.features import html_to_text
from bastion.guard.classifier.model import Model, Scored, shipped_model, verdict_of
from bastion.guard.classifier.urls import extract_urls, host_of, is_known_domain, is_shortener
from bastion.guard.signals import EventContext, Signal

if TYPE_CHECKING:
    from bastion.server import HomeServer

__all__ = ["ContentClassifier", "message_texts", "score_text"]

_DAY_MS = 86_400_000
#: The most distinct unknown hosts named in one signal's evidence.
_MAX_HOSTS = 5


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _texts_of_content(content: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    body = _str(content.get("body"))
    formatted = ""
    if content.get("format") == "org.matrix.custom.html":
        formatted = html_to_text(_str(content.get("formatted_body")))
    ext = content.get("m.text")
    if isinstance(ext, str):
        out.append(ext)
    elif isinstance(ext, list):
        for rep in ext[:4]:
            if isinstance(rep, Mapping):
                text = _str(rep.get("body"))
                if rep.get("mimetype") == "text/html":
                    text = html_to_text(text)
                if text:
                    out.append(text)
    if body:
        out.append(body)
    if formatted.strip() and " ".join(formatted.split()) != " ".join(body.split()):
        out.append(formatted)
    return out


def message_texts(etype: str, content: Mapping[str, Any]) -> list[str]:
    """The texts of an event a person would read (empty when there is none). Pure."""
    if etype == "m.room.topic":
        return [t for t in (_str(content.get("topic")),) if t.strip()]
    if etype == "m.room.name":
        return [t for t in (_str(content.get("name")),) if t.strip()]
    if "format" not in content and "m.text" not in content and "m.new_content" not in content:
        body = content.get("body")  # (most messages: a plain body only)
        return [body] if isinstance(body, str) and body.strip() else []
    texts = _texts_of_content(content)
    new = content.get("m.new_content")
    if new is not None and isinstance(new, Mapping):
        texts += _texts_of_content(new)
    seen: list[str] = []
    for t in texts:
        if t.strip() and t not in seen:
            seen.append(t)
    return seen


def score_text(
    model: Model, config: ClassifierConfig, text: str, *, hold: float, block: float,
    explain: bool = False, urls: list[str] | None = None,
) -> Scored:  # fmt: skip
    """The one scoring function of a text (the server and ``bastion guard score`` both call
    it): the first ``max_chars`` characters, the configured brand list, the thresholds.
    ``urls``: the links of those characters, when the caller has them already."""
    return model.score(
        text[: config.max_chars], explain=explain, brands=config.brands, hold=hold, block=block,
        urls=urls,
    )  # fmt: skip


class ContentClassifier:
    """``hs.guard.classifier``: :meth:`signals` for one event."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        guard = hs.config.guard_config
        self.config: ClassifierConfig = guard.classifier
        #: None when the guard or the classifier is off (nothing is loaded then).
        self.model: Model | None = (
            shipped_model() if guard.enabled and self.config.enabled else None
        )

    # -- thresholds --------------------------------------------------------------------------
    def thresholds(self, room_id: str | None = None) -> tuple[bool, float, float]:
        """(enabled, hold, block) for a room: its guard settings, else the server's."""
        assert self.model is not None
        enabled = True
        hold = self.config.hold if self.config.hold is not None else self.model.hold
        block = self.config.block if self.config.block is not None else self.model.block
        if room_id is not None:
            guard = getattr(self.hs, "guard", None)
            settings = guard.room_settings(room_id) if guard is not None else {}
            room = settings.get("classifier") if settings else None
            if room is not None and isinstance(room, Mapping):
                enabled = bool(room.get("enabled", True))
                hold = float(room.get("hold", hold))
                block = float(room.get("block", block))
        return enabled, min(hold, block), block

    # -- scoring -----------------------------------------------------------------------------
    def links(self, texts: list[str]) -> list[list[str]]:
        """The links of each text (of its first ``max_chars`` characters, the part scored)."""
        return [extract_urls(text[: self.config.max_chars]) for text in texts]

    def score_texts(
        self, texts: list[str], *, hold: float, block: float, explain: bool = False,
        links: list[list[str]] | None = None,
    ) -> Scored | None:  # fmt: skip
        """The highest-scoring of the texts (None when there is none); ``links``: theirs
        (:meth:`links`), when the caller has them already."""
        assert self.model is not None
        if links is None:
            links = self.links(texts)
        best: Scored | None = None
        for text, urls in zip(texts, links, strict=True):
            s = score_text(self.model, self.config, text, hold=hold, block=block,
                           explain=explain, urls=urls)  # fmt: skip
            if best is None or s.score > best.score:
                best = s
        return best

    def signals(self, ctx: EventContext) -> list[Signal]:
        """The classifier's signals about one event ([] when it may not or need not read it)."""
        if self.model is None or not ctx.readable:
            return []
        if not ctx.local and not self.config.federated:
            return []
        texts = message_texts(ctx.etype, ctx.content)
        if not texts:
            return []
        enabled, hold, block = self.thresholds(ctx.room_id)
        if not enabled:
            return []
        out: list[Signal] = []
        links = self.links(texts)
        scored = self.score_texts(texts, hold=hold, block=block, links=links)
        assert scored is not None
        verdict = verdict_of(scored.score, hold, block)
        if verdict != "ok":
            # Explanations only for what is acted on (the features' names cost time).
            scored = (
                self.score_texts(texts, hold=hold, block=block, explain=True, links=links) or scored
            )
            out.append(self._verdict_signal(scored, verdict, hold, block))
        out += self._url_signals(ctx, links)
        return out

    def _verdict_signal(self, scored: Scored, verdict: str, hold: float, block: float) -> Signal:
        severity = "block" if verdict == "spam" else "hold"
        what = "looks like spam or a scam" if verdict == "spam" else "may be spam or a scam"
        url_reasons = [r[4:] for r in scored.reasons if r.startswith("url ")]
        reason = f"the message {what} (score {scored.score:.2f})"
        if url_reasons:
            reason += ": " + "; ".join(url_reasons[:3])
        evidence = {
            "score": round(scored.score, 4),
            "model_score": round(scored.model_score, 4),
            "hold": hold,
            "block": block,
            "verdict": verdict,
            "reasons": list(scored.reasons[:8]),
            "url_rules": list(scored.url_rules[:8]),
        }
        if self.config.shadow:
            return Signal("classifier", "warn", scored.score,
                          f"shadow: would {'block' if verdict == 'spam' else 'hold'}: {reason}",
                          {**evidence, "shadow": True})  # fmt: skip
        return Signal("classifier", severity, scored.score, reason, evidence)

    def _url_signals(self, ctx: EventContext, links: list[list[str]]) -> list[Signal]:
        hosts: list[str] = []
        for urls in links:
            for url in urls:
                host = host_of(url)
                if host and host not in hosts:
                    hosts.append(host)
        if not hosts:
            return []
        out: list[Signal] = []
        shorteners = [h for h in hosts if is_shortener(h)]
        if shorteners:
            out.append(Signal("classifier.url", "info", 0.3,
                              "the message links through a link shortener",
                              {"rule": "shortener", "hosts": shorteners[:_MAX_HOSTS]}))  # fmt: skip
        created = ctx.sender_created_ms
        days = self.config.new_account_days
        if created is not None and ctx.now_ms - created < days * _DAY_MS:
            unknown = [h for h in hosts if not is_known_domain(h, self.config.known_domains)]
            if unknown:
                age_h = max(0, ctx.now_ms - created) // 3_600_000
                out.append(Signal(
                    "classifier.url", "warn", 0.5,
                    f"a new account ({age_h} h old) links to a domain the server does not know",
                    {"rule": "unknown_domain_new_account", "hosts": unknown[:_MAX_HOSTS],
                     "account_age_ms": ctx.now_ms - created, "new_account_days": days},
                ))  # fmt: skip
        return out
