"""The server's support information (C-S API "Server Discovery" → "Getting the support
information", ``GET /.well-known/matrix/support``, support.yaml, v1.10): who runs the server and
how to reach them. Pure: checks the configured values and builds the answer.

A contact has a ``role`` (``m.role.admin``, ``m.role.security``, or a role of the operator's own
in the Common Namespaced Identifier Grammar, outside the spec's reserved ``m.`` namespace) and
at least one of ``matrix_id`` (a user ID, possibly on another server, so the admin can be reached
while this one is down) and ``email_address``. ``support_page`` is an http(s) URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bastion.core.identifiers import is_valid_namespaced_identifier, is_valid_user_id
from bastion.core.urls import valid_http_url

__all__ = ["SPEC_ROLES", "check_support", "support_answer"]

#: The roles the spec defines.
SPEC_ROLES = frozenset({"m.role.admin", "m.role.security"})

_CONTACT_KEYS = frozenset({"matrix_id", "email_address", "role"})

#: The longest e-mail address (RFC 5321's path limit) and support page URL accepted.
MAX_EMAIL = 254
MAX_URL = 2048


def _valid_email(value: object) -> bool:
    if not isinstance(value, str) or not 3 <= len(value) <= MAX_EMAIL or not value.isprintable():
        return False
    if any(c.isspace() for c in value) or value.count("@") != 1:
        return False
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain and not domain.startswith(".") and not domain.endswith(".")


def _valid_page(value: object) -> bool:
    return (
        isinstance(value, str) and 0 < len(value) <= MAX_URL and valid_http_url(value, query=True)
    )


def _valid_role(value: object) -> bool:
    if value in SPEC_ROLES:
        return True
    # An operator's own role: namespaced, and not in the namespace the spec reserves.
    return is_valid_namespaced_identifier(value) and not str(value).startswith("m.")


def check_support(contacts: object, page: object) -> list[dict[str, str]]:
    """The configured contacts as the answer lists them; ValueError naming the first problem."""
    if not isinstance(contacts, Sequence) or isinstance(contacts, str | bytes):
        raise ValueError("support_contacts must be a list of tables")
    checked: list[dict[str, str]] = []
    for i, contact in enumerate(contacts):
        where = f"support_contacts[{i}]"
        if not isinstance(contact, Mapping):
            raise ValueError(f"{where} must be a table of role, matrix_id and/or email_address")
        unknown = set(contact) - _CONTACT_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        if not _valid_role(contact.get("role")):
            raise ValueError(
                f"{where}: role must be m.role.admin, m.role.security or a namespaced "
                "identifier of your own (e.g. org.example.billing)"
            )
        if "matrix_id" not in contact and "email_address" not in contact:
            raise ValueError(f"{where} needs a matrix_id or an email_address (or both)")
        if "matrix_id" in contact and not is_valid_user_id(contact["matrix_id"], historical=True):
            raise ValueError(f"{where}: matrix_id {contact['matrix_id']!r} is not a user ID")
        if "email_address" in contact and not _valid_email(contact["email_address"]):
            raise ValueError(f"{where}: {contact['email_address']!r} is not an e-mail address")
        checked.append({k: contact[k] for k in ("matrix_id", "email_address", "role")
                        if k in contact})  # fmt: skip
    if page is not None and page != "" and not _valid_page(page):
        raise ValueError("support_page must be an http(s) URL")
    return checked


def support_answer(contacts: object, page: object) -> dict[str, object] | None:
    """The 200 body, or None when nothing is configured (the spec's 404)."""
    listed = check_support(contacts, page)
    if not listed and not page:
        return None
    answer: dict[str, object] = {}
    if listed:
        answer["contacts"] = listed
    if page:
        answer["support_page"] = page
    return answer
