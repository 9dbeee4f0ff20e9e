"""A Flower ``Grid`` that collects replies as soon as they arrive.

flwr 1.42's ``Grid.send_and_receive`` pushes the messages, then pulls the
replies every 3 seconds until all are in. A fedsecure round is one message
per site (four under SecAgg+, one per stage), so those sleeps add up to
seconds per round for nothing. This grid pushes the same way and pulls every
``interval`` seconds instead; everything else is the wrapped grid's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid


class PromptGrid:
    """``grid`` with a ``send_and_receive`` that polls every ``interval`` seconds.

    Args:
        grid: the ServerApp's grid.
        interval: seconds between two pulls (a pull is one local request to the SuperLink).
    """

    def __init__(self, grid: Grid, interval: float = 0.2) -> None:
        self.grid = grid
        self.interval = interval

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push ``messages`` and return the replies that arrive within ``timeout`` seconds (None: all of them)."""
        waiting = set(self.grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            pulled = list(self.grid.pull_messages(waiting))
            replies.extend(pulled)
            waiting.difference_update(reply.metadata.reply_to_message_id for reply in pulled)
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.interval)
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)
