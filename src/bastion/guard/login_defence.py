"""(Skeleton of the contract: the login part replaces this module.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.server import HomeServer


class LoginDefence:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
