"""Server discovery and version negotiation (C-S API "Server Discovery", "API Standards" →
"GET /_matrix/client/versions")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.mutual_rooms import UNSTABLE_FEATURES as MUTUAL_ROOMS_FEATURES
from bastion.api.client.sliding_sync import UNSTABLE_FEATURES as SLIDING_SYNC_FEATURES
from bastion.api.http import Request, Router
from bastion.core.support import support_answer
from bastion.errors import not_found

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: Spec versions whose Client-Server API Bastion serves, oldest first.
#:
#: - v1.1 is the first version with the ``/v3`` paths Bastion serves; ``r0.x`` versions describe
#:   the ``/r0`` prefix, which Bastion does not serve, so none is listed.
#: - Each version from v1.1 to v1.12 is listed, not only the newest: versions are compared as
#:   exact strings, and clients switch features on by the version that introduced them
#:   (matrix-js-sdk, hence Element: "is any of v1.1…v1.13 listed" for "homeserver too old",
#:   ``v1.4`` for threads and private receipts, ``v1.11`` for authenticated media). Later
#:   versions only add to earlier ones, and Bastion implements what they add that clients
#:   depend on: thread-aware receipts (v1.4), token-authenticated registration (v1.2),
#:   authenticated media (v1.11), with the deprecated parts it deliberately refuses
#:   (``access_token`` in the query string; unauthenticated media, frozen as v1.11 allows).
#: - The endpoints these versions added that were missing are now served (issue 11):
#:   ``/relations`` (v1.3), ``/threads`` (v1.4), ``/hierarchy`` (v1.2),
#:   ``/timestamp_to_event`` (v1.6), refresh tokens (v1.3) and ``/login/get_token`` (v1.7,
#:   off unless configured).
#: - v1.13 and later are not listed until each of their additions is checked (the room
#:   summary endpoint of v1.15 is served already).
SUPPORTED_VERSIONS = [f"v1.{minor}" for minor in range(1, 13)]

#: ``unstable_features`` of ``/versions``: exactly the unstable features Bastion serves (a flag
#: listed here switches the feature on in clients), each from the module that serves it.
UNSTABLE_FEATURES: dict[str, bool] = dict.fromkeys(
    (*MUTUAL_ROOMS_FEATURES, *SLIDING_SYNC_FEATURES), True
)


def register(router: Router, hs: HomeServer) -> None:
    # Checked when the config is loaded; built once (a bad value stops the server starting).
    support = support_answer(hs.config.support_contacts, hs.config.support_page)

    async def well_known(req: Request) -> dict:
        """GET /.well-known/matrix/client — ``m.homeserver.base_url``."""
        return {"m.homeserver": {"base_url": hs.config.base_url}}

    async def well_known_support(req: Request) -> dict:
        """GET /.well-known/matrix/support — C-S API "Server Discovery" → "Getting the support
        information" (support.yaml, v1.10): ``contacts`` and/or ``support_page`` from the config
        (``support_contacts``, ``support_page``); 404 ``M_NOT_FOUND`` when neither is set."""
        if support is None:
            raise not_found("no support information is configured")
        return support

    async def versions(req: Request) -> dict:
        """GET /_matrix/client/versions — C-S API "API Standards" (versions.yaml); authentication
        optional. See ``SUPPORTED_VERSIONS`` for why these versions."""
        return {"versions": SUPPORTED_VERSIONS, "unstable_features": UNSTABLE_FEATURES}

    router.add("GET", "/.well-known/matrix/client", well_known, auth=False)
    router.add("GET", "/.well-known/matrix/support", well_known_support, auth=False)
    router.add("GET", "/_matrix/client/versions", versions, auth=False)
