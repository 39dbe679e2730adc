"""The event handler script contract: environment, stdin bytes and the output buffer.

Rules (serf agent ``invoke.go``; byte-exact with handlers recorded from the real agent):

* Environment: ``SERF_EVENT``, ``SERF_SELF_NAME``, ``SERF_SELF_ROLE`` (the local ``role`` tag,
  "" if none), one ``SERF_TAG_<NAME>`` per local tag where NAME is the tag name upper-cased with
  every character outside ``A-Z0-9_`` replaced by ``_``; user events add ``SERF_USER_EVENT`` and
  ``SERF_USER_LTIME``, queries ``SERF_QUERY_NAME`` and ``SERF_QUERY_LTIME`` (decimal).  The
  handler also inherits the agent's environment; merging is the runtime's job.
* stdin of a member event: one line per member, ``NAME\\tIP\\tROLE\\tk=v,k=v\\n``; in NAME, ROLE and
  the tag list every TAB is written as the two characters ``\\t`` and every newline as ``\\n``.
  Tags appear in the member's tag order (Serf's order is Go map order, i.e. random).
* stdin of a user event or query: the payload, plus ``\\n`` if it is non-empty and does not end
  with one; nothing for an empty payload.
* Output: stdout and stderr share one circular buffer of 8 KiB that keeps the *last* bytes.

Deviation: an environment value cannot hold a NUL byte (``execve`` refuses it), so NULs in tag
values or names are dropped instead of failing the run.
"""

from __future__ import annotations

import ipaddress

from serf_trio.serf.filters import (
    MemberEventLike,
    MemberLike,
    QueryEventLike,
    UserEventLike,
)

OUTPUT_LIMIT = 8 * 1024  # serf agent maxBufSize


def tag_env_name(tag: str) -> str:
    """``SERF_TAG_`` + the tag name upper-cased, characters outside ``A-Z0-9_`` as ``_``."""
    # Go replaces each rune that is not [A-Z0-9_] after strings.ToUpper; map rune by rune so a
    # character whose upper case is several characters (German sharp s) stays one ``_``.
    out = []
    for ch in tag:
        up = ch.upper()
        out.append(up if len(up) == 1 and (up.isascii() and (up.isalnum() or up == "_")) else "_")
    return "SERF_TAG_" + "".join(out)


def _env_value(text: str) -> str:
    return text.replace("\x00", "")


def handler_env(self_name: str, self_tags: dict[str, str], event: object) -> dict[str, str]:
    """The ``SERF_*`` variables for one handler run (without the inherited environment)."""
    env: dict[str, str] = {}
    if isinstance(event, QueryEventLike):
        kind = "query"
    elif isinstance(event, MemberEventLike):
        kind = event.kind
    elif isinstance(event, UserEventLike):
        kind = "user"
    else:
        raise TypeError(f"not a Serf event: {type(event).__name__}")
    env["SERF_EVENT"] = kind
    env["SERF_SELF_NAME"] = _env_value(self_name)
    env["SERF_SELF_ROLE"] = _env_value(self_tags.get("role", ""))
    for name, value in self_tags.items():
        env[tag_env_name(name)] = _env_value(value)
    if isinstance(event, QueryEventLike):
        env["SERF_QUERY_NAME"] = _env_value(event.name)
        env["SERF_QUERY_LTIME"] = str(event.ltime)
    elif isinstance(event, UserEventLike):
        env["SERF_USER_EVENT"] = _env_value(event.name)
        env["SERF_USER_LTIME"] = str(event.ltime)
    return env


def _clean(text: str) -> str:
    # serf agent eventClean: TAB and LF become the two-character escapes.
    return text.replace("\t", "\\t").replace("\n", "\\n")


def member_ip(member: MemberLike) -> str:
    """The member's IP as Go's ``net.IP.String()`` prints it (no port, no brackets)."""
    addr = getattr(member, "addr", None)
    host = getattr(addr, "host", None)
    if isinstance(host, str):
        return host
    if isinstance(addr, bytes | bytearray):
        if len(addr) in (4, 16):
            ip = ipaddress.ip_address(bytes(addr))
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ip)
        return ""
    if isinstance(addr, str):
        return addr
    return ""


def member_line(member: MemberLike) -> bytes:
    """One stdin line of a member event: ``NAME\\tIP\\tROLE\\tk=v,k=v\\n``."""
    tags = ",".join(f"{k}={v}" for k, v in member.tags.items())
    role = member.tags.get("role", "")
    line = f"{_clean(member.name)}\t{member_ip(member)}\t{_clean(role)}\t{_clean(tags)}\n"
    return line.encode("utf-8", "surrogateescape")


def payload_stdin(payload: bytes | None) -> bytes:
    """A user event or query payload as stdin: newline appended if missing; b"" stays b""."""
    data = bytes(payload or b"")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def handler_stdin(event: object) -> bytes:
    """The bytes written to the handler's stdin before it is closed."""
    if isinstance(event, QueryEventLike | UserEventLike):
        return payload_stdin(event.payload)
    if isinstance(event, MemberEventLike):
        return b"".join(member_line(m) for m in event.members)
    raise TypeError(f"not a Serf event: {type(event).__name__}")


class OutputBuffer:
    """Serf's circular output buffer: keeps the last ``limit`` bytes and counts all written."""

    __slots__ = ("_buf", "limit", "total")

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self.total = 0
        self._buf = bytearray()

    def write(self, data: bytes | bytearray) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > self.limit:
            del self._buf[: len(self._buf) - self.limit]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def getvalue(self) -> bytes:
        return bytes(self._buf)


# Worst-case bytes of an encoded queryResponse besides the payload and the node name: type
# byte, map header, the five keys, Flags/ID as uint32, LTime as uint64, two 3-byte string
# headers (gossip msgpack has no str8).
_RESPONSE_OVERHEAD = 1 + 1 + (1 + 5 + 5) + (1 + 4 + 3) + (1 + 2 + 5) + (1 + 5 + 9) + (1 + 7 + 3)


def max_response_payload(limit: int, node_name: str) -> int:
    """The largest handler output sure to fit Serf's ``QueryResponseSizeLimit`` (1024)."""
    return max(0, limit - _RESPONSE_OVERHEAD - len(node_name.encode("utf-8")))
