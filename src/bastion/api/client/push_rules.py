"""Push rules (C-S API "Push Rules: API": pushrules.yaml).

matrix-js-sdk will not start syncing until ``GET /pushrules/`` (with the trailing slash) works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import bad_json, invalid_param
from bastion.services.push_rules import check_kind, find_rule

if TYPE_CHECKING:
    from bastion.server import HomeServer

BASE = "/_matrix/client/v3/pushrules"


def _scope(req: Request) -> None:
    # "global" is the only ruleset ("Retrieve all push rulesets").
    if req.params.get("scope", "global") != "global":
        raise invalid_param("the only push rule scope is 'global'")


def register(router: Router, hs: HomeServer) -> None:
    async def get_all(req: Request) -> dict:
        """GET /_matrix/client/v3/pushrules/ — C-S API "Push Rules: API"."""
        return {"global": hs.push_rules.ruleset(req.requester.user_id)}

    async def get_global(req: Request) -> dict:
        """GET /_matrix/client/v3/pushrules/global/ — C-S API "Push Rules: API"."""
        return hs.push_rules.ruleset(req.requester.user_id)

    async def get_rule(req: Request) -> dict | list:
        """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId} — C-S API "Push Rules: API".
        An empty ``ruleId`` (``/pushrules/global/{kind}/``) lists the rules of that kind."""
        _scope(req)
        kind, rule_id = req.params["kind"], req.params["ruleId"]
        check_kind(kind)
        ruleset = hs.push_rules.ruleset(req.requester.user_id)
        if rule_id == "":
            return ruleset[kind]
        return find_rule(ruleset, kind, rule_id)

    async def put_rule(req: Request) -> dict:
        """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId} — C-S API "Push Rules: API"
        (``before``/``after`` query parameters)."""
        _scope(req)
        body = await req.json()
        q = req.query
        await hs.push_rules.put(
            req.requester.user_id, req.params["kind"], req.params["ruleId"], body,
            q.get("before") or None, q.get("after") or None,
        )  # fmt: skip
        return {}

    async def delete_rule(req: Request) -> dict:
        """DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId} — C-S API "Push Rules:
        API". Server-default rules cannot be deleted."""
        _scope(req)
        await hs.push_rules.delete(req.requester.user_id, req.params["kind"], req.params["ruleId"])
        return {}

    def attr_handlers(attr: str):
        async def get_attr(req: Request) -> dict:
            """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/{enabled|actions} —
            C-S API "Push Rules: API"."""
            _scope(req)
            kind = req.params["kind"]
            check_kind(kind)
            rule = find_rule(hs.push_rules.ruleset(req.requester.user_id), kind,
                             req.params["ruleId"])  # fmt: skip
            return {attr: rule[attr]}

        async def put_attr(req: Request) -> dict:
            """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/{enabled|actions} —
            C-S API "Push Rules: API"."""
            _scope(req)
            body = await req.json()
            if attr not in body:
                raise bad_json(f"{attr!r} is required")
            await hs.push_rules.set_attribute(
                req.requester.user_id, req.params["kind"], req.params["ruleId"], attr, body[attr]
            )
            return {}

        return get_attr, put_attr

    router.add("GET", BASE + "/", get_all)
    router.add("GET", BASE + "/global/", get_global)
    router.add("GET", BASE + "/{scope}/{kind}/{ruleId}", get_rule)
    router.add("PUT", BASE + "/{scope}/{kind}/{ruleId}", put_rule)
    router.add("DELETE", BASE + "/{scope}/{kind}/{ruleId}", delete_rule)
    for attr in ("enabled", "actions"):
        get_attr, put_attr = attr_handlers(attr)
        router.add("GET", BASE + "/{scope}/{kind}/{ruleId}/" + attr, get_attr)
        router.add("PUT", BASE + "/{scope}/{kind}/{ruleId}/" + attr, put_attr)
