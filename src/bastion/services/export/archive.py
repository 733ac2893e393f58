"""The export archive: a ZIP written as its contents are read, and its ``index.html``.

Every JSON file is written into the ZIP while it is read, one page of items at a time
(``zipfile`` entries opened for writing, ZIP64 so that any size fits); media files are copied
from disk in chunks. The human-readable ``index.html`` is spooled to a temporary file beside
the archive while the pages go by and copied into the ZIP at the end, so neither the archive,
nor a kind's items, nor the HTML is ever held in memory whole.

``index.html`` is plain, self-contained HTML: no script, no external resource, every value
escaped (``html.escape``: the user's own data may contain ``<script>``), and a
``Content-Security-Policy`` meta tag that forbids scripts and fetches even so.

:func:`write_archive` is a generator: each ``next`` does one page of work and yields the
progress so far, so the server can run it on its event loop between other requests and the
command line can print progress; it returns the :class:`ArchiveResult`.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import secrets
import zipfile
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bastion.services.export.collect import KINDS, Collector, Kind
from bastion.services.export.schema import SCHEMA_MD

#: The version of the archive layout (manifest.json ``schema_version``; schema.md).
SCHEMA_VERSION = 1
#: Bytes copied per step (media files into the archive, the archive into the hash).
CHUNK = 1 << 20
#: The longest text shown for one value in index.html (the JSON files hold it whole).
HTML_VALUE_CHARS = 4000


@dataclass
class Progress:
    """How far an export is: the kind being written and the items written per kind."""

    kind: str
    counts: dict[str, int] = field(default_factory=dict)
    media_bytes: int = 0


@dataclass(frozen=True)
class ArchiveResult:
    path: Path
    size: int
    sha256: str
    counts: dict[str, int]


ProgressFn = Callable[[Progress], None]


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _esc(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > HTML_VALUE_CHARS:
        text = text[:HTML_VALUE_CHARS] + " …"
    return html.escape(text, quote=True)


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .4em;vertical-align:top;text-align:left}}
pre{{white-space:pre-wrap;word-break:break-all;margin:0}}</style></head><body>
"""


def _html_item(kind: Kind, item: Any) -> str:
    """One item of a kind as a table row (events: time, room, sender, type, body)."""
    if kind.name in ("events_sent", "events_visible"):
        ev = item.get("event", item) if kind.name == "events_sent" else item
        content = ev.get("content") if isinstance(ev.get("content"), dict) else {}
        body = content.get("body") if isinstance(content.get("body"), str) else content
        cells = [ev.get("origin_server_ts"), ev.get("room_id", item.get("room_id")),
                 ev.get("sender"), ev.get("type"), body]  # fmt: skip
        return "<tr>" + "".join(f"<td><pre>{_esc(c)}</pre></td>" for c in cells) + "</tr>\n"
    return f"<tr><td><pre>{_esc(item)}</pre></td></tr>\n"


class _ArchiveWriter:
    """The ZIP and the spooled HTML body."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        self.spool_path = path.with_name(path.name + ".html.part")
        self.spool: IO[bytes] = open(self.spool_path, "w+b")  # noqa: SIM115 - closed in close()

    def html(self, text: str) -> None:
        self.spool.write(text.encode("utf-8"))

    def close(self) -> None:
        self.spool.close()
        self.spool_path.unlink(missing_ok=True)
        self.zip.close()


def write_archive(
    collector: Collector, path: Path, *, user_id: str, server_name: str, created_ts: int,
    progress: ProgressFn | None = None,
) -> Generator[Progress, None, ArchiveResult]:  # fmt: skip
    """Write the export of ``collector``'s user to ``path`` (created; removed on failure)."""
    state = Progress(kind="")
    w = _ArchiveWriter(path)
    done = False
    try:
        for kind in KINDS:
            state.kind = kind.name
            state.counts[kind.name] = 0
            w.html(f'<h2 id="{kind.name}">{_esc(kind.name)}</h2>\n<p>{_esc(kind.description)}'
                   f" — <code>{_esc(kind.path)}</code></p>\n<table>\n")  # fmt: skip
            with w.zip.open(kind.path, "w", force_zip64=True) as out:
                if not kind.single:
                    out.write(b"[")
                first = True
                for page in collector.pages(kind.name):
                    for item in page:
                        if kind.single:
                            out.write(_json(item))
                        else:
                            out.write((b"" if first else b",\n") + _json(item))
                        first = False
                        if kind.single and isinstance(item, dict):
                            rows = [f"<tr><th>{_esc(k)}</th><td><pre>{_esc(v)}</pre></td></tr>\n"
                                    for k, v in item.items()]  # fmt: skip
                            w.html("".join(rows))
                        else:
                            w.html(_html_item(kind, item))
                    if kind.single:
                        one = page[0] if page else None
                        n = len(one) if isinstance(one, dict) else int(one is not None)
                        state.counts[kind.name] = n
                    else:
                        state.counts[kind.name] += len(page)
                    if progress is not None:
                        progress(state)
                    yield state
                if kind.single and first:
                    out.write(b"null")
                if not kind.single:
                    out.write(b"]")
            w.html("</table>\n")
        # The files of the uploads, streamed from disk (a second pass over the media rows).
        state.kind = "media_files"
        state.counts["media_files"] = 0
        for page in collector.media_rows():
            for m in page:
                src = collector.media_path(m["media_id"])
                if not src.is_file():
                    continue
                # (decrypted when the file is encrypted at rest)
                with w.zip.open(f"media/files/{m['media_id']}", "w", force_zip64=True) as out:
                    for chunk in collector.media_chunks(m["media_id"]):
                        out.write(chunk)
                        state.media_bytes += len(chunk)
                        yield state
                state.counts["media_files"] += 1
            if progress is not None:
                progress(state)
            yield state
        manifest = {
            "format": "bastion-export",
            "schema_version": SCHEMA_VERSION,
            "user_id": user_id,
            "server_name": server_name,
            "created_ts": created_ts,
            "kinds": {
                k.name: {"path": k.path, "count": state.counts[k.name],
                         "description": k.description}
                for k in KINDS
            },
            "media_files": {"path": "media/files/", "count": state.counts["media_files"],
                            "bytes": state.media_bytes},
        }  # fmt: skip
        w.zip.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        w.zip.writestr("schema.md", SCHEMA_MD)
        state.kind = "index.html"
        yield from _write_index(w, manifest, state)
        w.close()
        # The archive's hash, for its ledger record (a chunk per step, like everything else).
        state.kind = "sha256"
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                yield state
        done = True
    finally:
        if not done:
            w.close()
            path.unlink(missing_ok=True)
    return ArchiveResult(path, size, digest.hexdigest(), dict(state.counts))


def _write_index(
    w: _ArchiveWriter, manifest: dict[str, Any], state: Progress
) -> Generator[Progress, None, None]:
    """index.html: a heading, the table of contents with the counts, then the spooled body
    (copied a chunk per step)."""
    user = _esc(manifest["user_id"])
    head = _HTML_HEAD.format(title=f"Data export for {user}")
    toc = "".join(
        f'<li><a href="#{name}">{_esc(name)}</a>: {info["count"]}</li>\n'
        for name, info in manifest["kinds"].items()
    )
    intro = (
        f"<h1>Data export for {user}</h1>\n<p>Server {_esc(manifest['server_name'])}, made at "
        f"{_esc(str(manifest['created_ts']))} (ms since 1970, UTC). The JSON files beside this "
        "page hold everything shown here, whole; <code>schema.md</code> describes them, "
        "<code>manifest.json</code> lists them. Uploaded files are in "
        "<code>media/files/</code>.</p>\n<ul>\n" + toc + "</ul>\n"
    )
    w.spool.flush()
    with w.zip.open("index.html", "w", force_zip64=True) as out:
        out.write((head + intro).encode("utf-8"))
        w.spool.seek(0)
        while chunk := w.spool.read(CHUNK):
            out.write(chunk)
            yield state
        out.write(b"</body></html>\n")


def new_part_path(directory: Path, name: str) -> Path:
    """A fresh temporary path in ``directory`` (created) for an archive being written."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.{secrets.token_hex(8)}.zip.part"


def remove_parts(directory: Path) -> None:
    """Remove archives left half-written by a crash (they hold personal data)."""
    if directory.is_dir():
        for p in directory.glob("*.part"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
