"""The memberlist ``Delegate`` of a Serf node (serf delegate.go + ping_delegate.go).

memberlist calls these synchronously from inside its own entry points; they forward to the
``SerfNode`` that owns the core, which collects any effects they cause and returns them from
the entry point that is running.  Mapping:

* ``node_meta`` -> the encoded tags (``0xFF`` + msgpack map);
* ``notify_msg`` -> dispatch of one Serf message (intents, events, queries, responses, relays);
* ``get_broadcasts`` -> Serf's three queues, intents first, then queries, then events;
* ``local_state`` / ``merge_remote_state`` -> Serf push/pull state (type 2);
* ``ack_payload`` / ``notify_ping_complete`` -> Vivaldi coordinates.
"""

from __future__ import annotations

from typing import Protocol


class DelegateHost(Protocol):
    """What ``SerfDelegate`` needs from ``SerfNode``."""

    def _meta(self) -> bytes: ...
    def _notify_msg(self, now: float, payload: bytes) -> None: ...
    def _get_broadcasts(self, overhead: int, limit: int) -> list[bytes]: ...
    def _local_state(self, join: bool) -> bytes: ...
    def _merge_remote_state(self, now: float, buf: bytes, join: bool) -> None: ...
    def _ack_payload(self) -> bytes: ...
    def _ping_complete(self, node: str, rtt: float, payload: bytes) -> None: ...


class SerfDelegate:
    """Implements ``swim.api.Delegate`` on behalf of a ``SerfNode``."""

    __slots__ = ("_host",)

    def __init__(self, host: DelegateHost) -> None:
        self._host = host

    def node_meta(self, limit: int) -> bytes:
        meta = self._host._meta()
        return meta if len(meta) <= limit else b""

    def notify_msg(self, now: float, payload: bytes) -> None:
        if payload:  # serf: an empty user message is ignored
            self._host._notify_msg(now, payload)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return self._host._get_broadcasts(overhead, limit)

    def local_state(self, join: bool) -> bytes:
        return self._host._local_state(join)

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        self._host._merge_remote_state(now, buf, join)

    def ack_payload(self) -> bytes:
        return self._host._ack_payload()

    def notify_ping_complete(self, node: str, rtt: float, payload: bytes) -> None:
        self._host._ping_complete(node, rtt, payload)
