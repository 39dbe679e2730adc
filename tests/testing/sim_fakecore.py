"""A tiny membership core speaking the ``swim.api`` driver contract, to test the simulator.

Its protocol is deliberately trivial (text datagrams, one-line stream exchanges) so that the
engine tests exercise packets, streams, timers, commands and effects without the real core:

* ``probe``: ping the next known alive member (sorted round robin); no ack within
  ``probe_timeout`` -> suspect it (notice ``suspected``); still suspect after ``SUSPICION`` s ->
  dead (notice ``declared_dead`` + a LEAVE event).  An ack or alive gossip clears suspicion.
* ``gossip``: send ``alive <own name> <host>`` to two random peers (no relaying: a node
  declared dead comes back only by talking to the declarer itself).
* ``join``/``push_pull``: a stream carrying our table, answered with the peer's table;
  push/pull picks any known peer, dead ones included, so it heals partitions.
* ``leave``: ``LeaveDone`` half a second later (a timer).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from serf_trio.swim.api import (
    Address,
    Effect,
    JoinDone,
    LeaveDone,
    MemberEvent,
    MemberEventKind,
    MemberInfo,
    Notice,
    OpenStream,
    SendPacket,
    State,
)
from serf_trio.swim.config import SwimConfig

SUSPICION = 2.0


class FakeCore:
    def __init__(
        self, config: SwimConfig, name: str, addr: Address, rng: random.Random, now: float
    ) -> None:
        self.config = config
        self.name = name
        self.addr = addr
        self.rng = rng
        self.table: dict[str, tuple[Address, State, float]] = {name: (addr, State.ALIVE, now)}
        self.probe_seq = 0
        self.probing: tuple[int, str, float] | None = None  # seq, target, ack deadline
        self.suspects: dict[str, float] = {}  # name -> dead deadline
        self.rr = 0
        self.next_stream = 0
        self.joins: dict[int, int] = {}  # stream id -> join request id (0 = push/pull)
        self.leave_at: float | None = None
        self.calls: list[tuple[str, float]] = []
        self.inputs: list[tuple[float, str]] = []

    # -- helpers ---------------------------------------------------------------------------

    def _set(self, now: float, name: str, addr: Address, state: State) -> list[Effect]:
        old = self.table.get(name)
        self.table[name] = (addr, state, now)
        info = self._info(name)
        if state is State.ALIVE and (old is None or old[1] is State.DEAD):
            return [MemberEvent(MemberEventKind.JOIN, info)]
        if state is State.DEAD and old is not None and old[1] is not State.DEAD:
            return [MemberEvent(MemberEventKind.LEAVE, info)]
        return []

    def _info(self, name: str) -> MemberInfo:
        addr, state, t = self.table[name]
        return MemberInfo(name, addr, b"", 1, state, b"", t)

    def _table_bytes(self) -> bytes:
        return "\n".join(
            f"{n} {a.host} {s.value}" for n, (a, s, _) in sorted(self.table.items())
        ).encode()

    def _merge(self, now: float, data: bytes) -> list[Effect]:
        out: list[Effect] = []
        for line in data.decode().splitlines():
            n, host, state = line.split()
            if n != self.name and State(int(state)) is State.ALIVE:
                cur = self.table.get(n)
                if cur is None or cur[1] is not State.ALIVE:
                    self.suspects.pop(n, None)
                    out += self._set(now, n, Address(host, 7946), State.ALIVE)
        return out

    def _alive_peers(self) -> list[str]:
        return sorted(
            n for n, (_, s, _) in self.table.items() if s is State.ALIVE and n != self.name
        )

    # -- the driver API --------------------------------------------------------------------

    def probe(self, now: float) -> list[Effect]:
        self.calls.append(("probe", now))
        peers = self._alive_peers()
        if self.probing is not None or not peers:
            return []
        target = peers[self.rr % len(peers)]
        self.rr += 1
        self.probe_seq += 1
        self.probing = (self.probe_seq, target, now + self.config.probe_timeout)
        return [SendPacket(self.table[target][0], f"ping {self.probe_seq}".encode())]

    def gossip(self, now: float) -> list[Effect]:
        self.calls.append(("gossip", now))
        peers = self._alive_peers()
        msg = f"alive {self.name} {self.addr.host}".encode()
        return [
            SendPacket(self.table[p][0], msg) for p in self.rng.sample(peers, min(2, len(peers)))
        ]

    def push_pull(self, now: float) -> list[Effect]:
        self.calls.append(("push_pull", now))
        peers = sorted(n for n in self.table if n != self.name)  # the dead too: heals cuts
        if not peers:
            return []
        self.next_stream += 1
        self.joins[self.next_stream] = 0
        addr = self.table[self.rng.choice(peers)][0]
        return [OpenStream(self.next_stream, addr, self._table_bytes(), True, 10.0)]

    def push_pull_period(self) -> float:
        return self.config.push_pull_interval

    def note_stall(self, now: float, seconds: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        ds = list(self.suspects.values())
        if self.probing is not None:
            ds.append(self.probing[2])
        if self.leave_at is not None:
            ds.append(self.leave_at)
        return min(ds) if ds else None

    def tick(self, now: float) -> list[Effect]:
        self.calls.append(("tick", now))
        out: list[Effect] = []
        if self.probing is not None and self.probing[2] <= now:
            _, target, _ = self.probing
            self.probing = None
            if self.table[target][1] is State.ALIVE and target not in self.suspects:
                self.suspects[target] = now + SUSPICION
                out.append(Notice("suspected", {"node": target, "by": self.name}))
        for n, d in sorted(self.suspects.items()):
            if d <= now:
                del self.suspects[n]
                out.append(Notice("declared_dead", {"node": n, "incarnation": 1}))
                out += self._set(now, n, self.table[n][0], State.DEAD)
        if self.leave_at is not None and self.leave_at <= now:
            self.leave_at = None
            out.append(LeaveDone(False))
        return out

    def handle_packet(self, now: float, src: Address, data: bytes) -> list[Effect]:
        self.inputs.append((now, data.decode()))
        words = data.decode().split()
        if words[0] == "ping":
            return [SendPacket(src, f"ack {words[1]}".encode())]
        if words[0] == "ack":
            if self.probing is not None and self.probing[0] == int(words[1]):
                self.probing = None
            return []
        if words[0] == "alive" and words[1] != self.name:
            return self._merge(now, f"{words[1]} {words[2]} 0".encode())
        return []

    def handle_stream(self, now: float, data: bytes) -> tuple[bytes | None, list[Effect]]:
        self.inputs.append((now, "stream"))
        if data == b"noreply":
            return None, []
        return self._table_bytes(), self._merge(now, data)

    def stream_result(
        self, now: float, stream_id: int, reply: bytes | None, error: str = ""
    ) -> list[Effect]:
        self.inputs.append((now, f"result {stream_id} {reply!r} {error}"))
        request = self.joins.pop(stream_id, None)
        out: list[Effect] = self._merge(now, reply) if reply else []
        if request:
            ok = reply is not None
            out.append(JoinDone(request, int(ok), () if ok else (error,)))
        return out

    def join(self, now: float, seeds: Sequence[Address]) -> tuple[int, list[Effect]]:
        out: list[Effect] = []
        for seed in seeds:
            self.next_stream += 1
            self.joins[self.next_stream] = self.next_stream
            out.append(OpenStream(self.next_stream, seed, self._table_bytes(), True, 10.0))
        return self.next_stream, out

    def leave(self, now: float, timeout: float) -> list[Effect]:
        self.leave_at = now + 0.5
        return []

    def members(self) -> list[MemberInfo]:
        return [self._info(n) for n in sorted(self.table)]

    def member(self, name: str) -> MemberInfo | None:
        return self._info(name) if name in self.table else None

    def num_alive(self) -> int:
        return sum(1 for _, s, _ in self.table.values() if s is State.ALIVE)
