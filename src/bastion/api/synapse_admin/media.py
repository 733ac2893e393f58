"""Synapse admin API "Media Admin API": a room's media, one media's details, quarantine and
release (one, a room's, a user's), delete one, delete by date and size. (A user's media list
is on the "User Admin API" page: :mod:`bastion.api.synapse_admin.users`.)

Quarantine and release (one, a room's) and a media's details cover local media and other
servers' media, as Synapse's do (a user's quarantine: local media only). Deleting one media ID
is for local media only (400 "Can only delete local media", as Synapse answers); cached remote
media goes with ``purge_media_cache``.

Differences from Synapse, on purpose:

- Quarantine is the guard's (``guard_quarantined_media``, ``quarantined_remote_media``):
  quarantined media is never served, 404 ``M_NOT_FOUND``. Another server's media can be
  quarantined whether it is cached here or not, and is then never fetched; quarantining it
  deletes the cached file and its thumbnails from disk (Synapse keeps them): harmful bytes do
  not stay on this server's disk or in its backups. Releasing it fetches it again on the next
  request. Its details stay visible to admins after the quarantine (``quarantined_by`` names
  who quarantined it and why).
- Bastion does not track when local media was last accessed: its ``last_access_ts`` is the
  upload time (a cached remote file's: when it was last served, written at most hourly), and
  delete-by-date (``before_ts``) compares the creation time.
- Protection from quarantine (``media/protect``) spares media from a room's or a user's bulk
  quarantine; quarantining the one media ID still works (an admin asked for that media).
- ``purge_media_cache`` compares the time a cached remote file was last served (its
  ``last_access_ts``, written at most hourly).
- A room's media list reads the ``url`` and ``info.thumbnail_url`` of the room's unencrypted
  events, as Synapse does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import admin_request, record_admin_read, require_admin
from bastion.api.http import Request, Router
from bastion.errors import invalid_param, missing_param

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    directory = hs.admin_directory

    async def room_media(req: Request) -> dict:
        """GET /_synapse/admin/v1/room/{roomId}/media — Synapse admin API "Media Admin API",
        "List all media in a room"; admins only; recorded."""
        require_admin(req)
        room_id = req.params["roomId"]
        out = directory.room_media(room_id)
        await record_admin_read(hs, req, target=room_id)
        return out

    async def media_info(req: Request) -> dict:
        """GET /_synapse/admin/v1/media/{serverName}/{mediaId} — Synapse admin API "Media Admin
        API", "Query a piece of media by ID" (local, or cached or quarantined remote media;
        404 otherwise); admins only; recorded."""
        require_admin(req)
        server_name, media_id = req.params["serverName"], req.params["mediaId"]
        out = directory.media_info(server_name, media_id)
        await record_admin_read(
            hs, req, target=_target(server_name, media_id), subject=out["media_info"]["user_id"]
        )
        return out

    def _target(server_name: str, media_id: str) -> str:
        """What an audit record names: a local media ID, or another server's mxc:// URI."""
        return media_id if server_name == hs.server_name else f"mxc://{server_name}/{media_id}"

    async def _quarantine_one(req: Request, quarantine: bool) -> dict:
        admin = require_admin(req)
        server_name, media_id = req.params["serverName"], req.params["mediaId"]
        audit = admin_request(hs, req, target=_target(server_name, media_id))
        await directory.quarantine_by_id(admin, server_name, media_id, quarantine, audit)
        return {}

    async def quarantine_one(req: Request) -> dict:
        """POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId} — Synapse admin API
        "Media Admin API", "Quarantining media by ID" (local or remote media; a remote one
        whether cached here or not, its cached copy deleted); admins only; recorded with the
        change."""
        return await _quarantine_one(req, True)

    async def unquarantine_one(req: Request) -> dict:
        """POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId} — Synapse admin
        API "Media Admin API", "Remove media from quarantine by ID" (local or remote media);
        admins only; recorded with the change."""
        return await _quarantine_one(req, False)

    async def quarantine_room(req: Request) -> dict:
        """POST /_synapse/admin/v1/room/{roomId}/media/quarantine — Synapse admin API "Media
        Admin API", "Quarantining media in a room" ("all local and remote media": the local
        media not protected, and every other server's media the room's events use); admins
        only; recorded with the change."""
        admin = require_admin(req)
        room_id = req.params["roomId"]
        ids = directory.unprotected(directory.local_media_ids_of_room(room_id))
        remote = directory.remote_media_keys_of_room(room_id)
        audit = admin_request(hs, req, target=room_id)
        n = await directory.quarantine(admin, ids, True, audit, remote=remote)
        return {"num_quarantined": n}

    async def quarantine_user(req: Request) -> dict:
        """POST /_synapse/admin/v1/user/{userId}/media/quarantine — Synapse admin API "Media
        Admin API", "Quarantining all media of a user"; admins only; recorded with the
        change."""
        admin = require_admin(req)
        user_id = req.params["userId"]
        ids = directory.unprotected(directory.local_media_ids_of_user(user_id))
        audit = admin_request(hs, req, target=user_id, subject=user_id)
        n = await directory.quarantine(admin, ids, True, audit)
        return {"num_quarantined": n}

    async def delete_one(req: Request) -> dict:
        """DELETE /_synapse/admin/v1/media/{serverName}/{mediaId} — Synapse admin API "Media
        Admin API", "Delete a specific local media": the row, the file and its thumbnails
        (another server's media: 400 "Can only delete local media", as Synapse answers);
        admins only; recorded with the change."""
        require_admin(req)
        server_name, media_id = req.params["serverName"], req.params["mediaId"]
        if server_name != hs.server_name:
            raise invalid_param("Can only delete local media")
        directory.media_info(server_name, media_id)  # 404 unknown
        deleted = await directory.delete_media([media_id], admin_request(hs, req, target=media_id))
        return {"deleted_media": deleted, "total": len(deleted)}

    async def delete_before(req: Request) -> dict:
        """POST /_synapse/admin/v1/media/delete — Synapse admin API "Media Admin API", "Delete
        local media by date or size" (``before_ts`` required, ``size_gt``, ``keep_profiles``);
        admins only; recorded with the change."""
        require_admin(req)
        before_ts = req.query_int("before_ts")
        if before_ts is None:
            raise missing_param("query parameter 'before_ts' is required")
        size_gt = req.query_int("size_gt", 0)
        if before_ts < 0 or size_gt < 0:
            raise invalid_param("'before_ts' and 'size_gt' must not be negative")
        keep = req.query.get("keep_profiles", "true")
        if keep not in ("true", "false"):
            raise invalid_param("'keep_profiles' must be 'true' or 'false'")
        ids = directory.media_before(before_ts, size_gt, keep == "true")
        deleted = await directory.delete_media(ids, admin_request(hs, req, target=None))
        return {"deleted_media": deleted, "total": len(deleted)}

    async def protect(req: Request) -> dict:
        """POST /_synapse/admin/v1/media/protect/{mediaId} — Synapse admin API "Media Admin
        API", "Protecting media from being quarantined" (local media); admins only; recorded
        with the change."""
        admin = require_admin(req)
        media_id = req.params["mediaId"]
        directory.media_info(hs.server_name, media_id)  # 404 unknown
        await directory.protect(admin, media_id, True, admin_request(hs, req, target=media_id))
        return {}

    async def unprotect(req: Request) -> dict:
        """POST /_synapse/admin/v1/media/unprotect/{mediaId} — Synapse admin API "Media Admin
        API", "Unprotecting media from being quarantined"; admins only; recorded with the
        change."""
        admin = require_admin(req)
        media_id = req.params["mediaId"]
        directory.media_info(hs.server_name, media_id)
        await directory.protect(admin, media_id, False, admin_request(hs, req, target=media_id))
        return {}

    async def purge_media_cache(req: Request) -> dict:
        """POST /_synapse/admin/v1/purge_media_cache — Synapse admin API "Media Admin API",
        "Purge Remote Media API" (``before_ts``): the cached copies of other servers' media
        last served before ``before_ts`` are deleted (``{"deleted": n}``); admins only;
        recorded."""
        require_admin(req)
        before_ts = req.query_int("before_ts")
        if before_ts is None:
            raise missing_param("query parameter 'before_ts' is required")
        if before_ts < 0:
            raise invalid_param("'before_ts' must not be negative")
        await record_admin_read(hs, req, target=None)
        return {"deleted": await hs.media.purge_remote_cache(before_ts)}

    router.add("GET", "/_synapse/admin/v1/room/{roomId}/media", room_media)
    router.add("POST", "/_synapse/admin/v1/media/protect/{mediaId}", protect)
    router.add("POST", "/_synapse/admin/v1/media/unprotect/{mediaId}", unprotect)
    router.add("POST", "/_synapse/admin/v1/purge_media_cache", purge_media_cache)
    router.add("POST", "/_synapse/admin/v1/room/{roomId}/media/quarantine", quarantine_room)
    router.add("POST", "/_synapse/admin/v1/user/{userId}/media/quarantine", quarantine_user)
    router.add("POST", "/_synapse/admin/v1/media/delete", delete_before)
    router.add("POST", "/_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}", quarantine_one)
    router.add(
        "POST", "/_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}", unquarantine_one
    )
    router.add("GET", "/_synapse/admin/v1/media/{serverName}/{mediaId}", media_info)
    router.add("DELETE", "/_synapse/admin/v1/media/{serverName}/{mediaId}", delete_one)
