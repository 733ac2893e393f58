"""Confusable usernames (bastion.guard.confusables): the skeleton and its index."""

from __future__ import annotations

import pytest

from bastion.guard.confusables import SkeletonIndex, impersonates, skeleton


@pytest.mark.parametrize("name", ["admin", "adm1n", "admln", "ADMIN", "a.dmin", "ad-min",
                                  "adrnin", "a_d_m_i_n", "4dmin", "ad=m/i+n"])  # fmt: skip
def test_admin_lookalikes_share_a_skeleton(name):
    assert skeleton(name) == skeleton("admin")


@pytest.mark.parametrize("a,b", [("wendy", "vvendy"), ("dave", "clave"), ("bob", "b0b"),
                                 ("sam", "5am"), ("eve", "3ve"), ("tom", "7om")])  # fmt: skip
def test_confusable_pairs(a, b):
    assert impersonates(b, a)


@pytest.mark.parametrize("a,b", [("alice", "alicia"), ("bob", "rob"), ("admin", "admins"),
                                 ("mod", "god")])  # fmt: skip
def test_distinct_names_are_not_confused(a, b):
    assert not impersonates(b, a)


def test_a_name_does_not_impersonate_itself():
    assert not impersonates("admin", "admin")


def test_index_finds_the_existing_name():
    idx = SkeletonIndex(["admin", "alice", "bob"])
    assert idx.confusable_with("adm1n") == "admin"
    assert idx.confusable_with("a.lice") == "alice"
    assert idx.confusable_with("admin") is None  # the same name: M_USER_IN_USE, not this check
    assert idx.confusable_with("carol") is None
    idx.add("carol")
    assert idx.confusable_with("car0l") == "carol"
    assert len(idx) == 4
