"""This node's tags as the agent keeps them: the one place that changes them.

Two callers change tags, RPC ``tags`` (merge and delete, then rewrite the tags file) and SIGHUP
(replace with the re-read config or tags file, which is the source and is not rewritten); one
lock orders them.  A change reaches the cluster through ``Node.set_tags`` first (peers see
member-update), then the handler scripts' ``SERF_TAG_*``, then the tags file.

**Tags file** (``tags_file``): read at start (``files.read_tags_file``) and rewritten
atomically (temp, fsync, rename) off the event loop whenever RPC ``tags`` changes the tags.  A
failed write is logged and reported to the RPC client; the tags stay changed in the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from serf_trio.api import Node, NotRunningError, SerfError
from serf_trio.rpc.api import AgentError
from serf_trio.runtime.handlers import HandlerSupervisor
from serf_trio.serf.tags import TagsTooLarge, encode_tags

from .files import write_json_atomically


class LocalTags:
    """The current tags and how they change (module docstring)."""

    def __init__(
        self,
        initial: Mapping[str, str],
        *,
        node: Node,
        supervisor: HandlerSupervisor,
        tags_file: Path | None,
        logger: Any,
    ) -> None:
        self._tags = dict(initial)
        self._node = node
        self._supervisor = supervisor
        self._tags_file = tags_file
        self._log = logger
        self._lock = trio.Lock()

    @property
    def current(self) -> dict[str, str]:
        return dict(self._tags)

    async def update(self, tags: Mapping[str, str], delete: list[str]) -> None:
        """RPC ``tags``: set ``tags``, remove ``delete``, rewrite the tags file."""
        gone = set(delete)
        async with self._lock:
            new = {k: v for k, v in self._tags.items() if k not in gone}
            new.update(tags)
            await self._apply(new, persist=True)

    async def replace(self, tags: Mapping[str, str]) -> bool:
        """SIGHUP: the re-read tags (the file is the source, not rewritten); True if they
        changed.  ``AgentError`` if the cluster refused them."""
        async with self._lock:
            if dict(tags) == self._tags:
                return False
            await self._apply(dict(tags), persist=False)
            return True

    async def _apply(self, new: dict[str, str], *, persist: bool) -> None:
        try:
            encode_tags(new)
            await self._node.set_tags(new)
        except (TagsTooLarge, SerfError, NotRunningError) as exc:
            raise AgentError(str(exc)) from None
        old, self._tags = self._tags, new
        self._supervisor.set_self_tags(new)
        self._log.info("tags_updated", tags=new, previous=old)
        path = self._tags_file
        if persist and path is not None:
            try:
                await trio.to_thread.run_sync(write_json_atomically, path, new)
            except OSError as exc:
                self._log.error("tags_file_write_failed", path=str(path), error=str(exc))
                raise AgentError(f"failed to write tags file: {exc}") from None
