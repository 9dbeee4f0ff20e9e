"""Threat positions: who attacks, and therefore what it sees.

Every attack runs from one position and receives only that position's view
(see :mod:`fedsecure.fl.views`); every finding names its position. The values
are the strings report.json carries.
"""

from __future__ import annotations

from enum import Enum


class Position(str, Enum):
    """A party that may attack a federation (a string: report.json carries its value)."""

    EXTERNAL = "external"
    """Anyone given the released final model (a user of the model, a journal's reviewer)."""

    SERVER = "server"
    """The aggregation server, honest but curious: it sees every message it receives."""

    CLIENT = "client"
    """A participating site: it sees the global model each round, and its own data and noise."""

    def __str__(self) -> str:
        return self.value

    @property
    def in_words(self) -> str:
        """Who sits here, in the words a data-protection officer uses."""
        return _WORDS[self]

    @property
    def party(self) -> str:
        """The party the privacy accountant states this seat's guarantee for ("public", "server", "site")."""
        return _PARTIES[self]


_WORDS = {
    Position.EXTERNAL: "anyone given the final model",
    Position.SERVER: "the aggregation server",
    Position.CLIENT: "another participating hospital",
}
_PARTIES = {Position.EXTERNAL: "public", Position.SERVER: "server", Position.CLIENT: "site"}
