"""Host names to gossip addresses, resolved the way Serf resolves them, never on the event loop.

Every place that takes an address from a person (``--bind``, ``--advertise``, ``--join``,
``--retry-join``, their config keys, ``serf-trio join ADDR``, ``Node.join``) goes through here.
Rules this module owns:

* **Forms** (``split_hostport``): ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6
  literal, where ``HOST`` is a literal IP or a DNS name.  Parsing checks the form only and does
  no lookup, so config loading stays free of I/O and keeps names as they were written.
* **A join target resolves to every address of its name** (``resolve_all``): memberlist's
  resolveAddr takes all the answers of the lookup and pushes/pulls with each, and its Join
  counts each address reached.  Callers resolve again on every attempt (``retry_join``), so a
  DNS record that changes is followed.
* **A bind or advertise address resolves to one address** (``resolve_one``), once, when the
  agent starts: the first IPv4 answer, else the first answer, which is what Go's
  ``net.ResolveTCPAddr("tcp", ...)`` (Serf's AddrParts) picks from a name with several.
* **Never blocking**: lookups run through ``trio.socket.getaddrinfo`` (a worker thread); a
  literal IP is never looked up.  ``Lookup`` is injectable (tests, custom discovery).
* **Errors**: ``ResolveError`` (a ``ValueError``) names the name and the resolver's reason.
* **Interfaces** (``interface_addresses``): the addresses of a network interface, for Serf's
  ``interface`` / ``-iface`` (its IPv4 address by the ``SIOCGIFADDR`` ioctl, then its IPv6
  addresses from ``/proc/net/if_inet6``).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import re
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from serf_trio.record import record
from serf_trio.swim.api import Address

Lookup = Callable[[str], Awaitable[Sequence[str]]]
"""A host name -> its IP addresses, best first (``system_lookup`` by default)."""

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_SIOCGIFADDR = 0x8915  # linux/sockios.h
_IF_INET6 = Path("/proc/net/if_inet6")


class ResolveError(ValueError):
    """A host name that does not resolve; ``host`` and the resolver's ``reason``."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"cannot resolve host name {host!r}: {reason}")
        self.host = host
        self.reason = reason


@record
class HostPort:
    """An address as written: ``host`` is a literal IP or a DNS name (not yet resolved)."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        return _is_ip(self.host)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_host_name(text: str) -> bool:
    """Whether ``text`` is a syntactically valid DNS name (a trailing dot is allowed)."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def split_hostport(text: str, default_port: int) -> HostPort:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6 literal -> ``HostPort`` (no
    lookup).  ``ValueError`` with a sentence for anything else."""
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPv6]:PORT")
        if not isinstance(_ip_or_none(host), ipaddress.IPv6Address):
            raise ValueError(f"{host!r} in brackets is not an IPv6 address")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        host = text  # a bare IPv6 literal
        if _ip_or_none(host) is None:
            raise ValueError(f"{text!r} is not an address (write IPv6 with a port as [IP]:PORT)")
    else:
        host = text
    if not host:
        raise ValueError(f"{text!r} has no host (expected HOST or HOST:PORT)")
    if not _is_ip(host) and not is_host_name(host):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    port = default_port
    if port_text is not None:
        if not port_text.isdigit():
            raise ValueError(f"the port in {text!r} is not a number")
        port = int(port_text)
        if port > 65535:
            raise ValueError(f"port out of range in {text!r} (0 to 65535)")
    return HostPort(host, port)


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def join_target(text: str, default_port: int = 7946) -> HostPort:
    """A join target: ``HOST[:PORT]`` or Serf's ``NAME/HOST[:PORT]`` (the name is dropped)."""
    name, slash, rest = text.partition("/")
    if slash and not name:
        raise ValueError(f"{text!r}: empty node name before '/'")
    return split_hostport(rest if slash else text, default_port)


async def system_lookup(host: str) -> list[str]:
    """The IP addresses of ``host`` from the system resolver (``getaddrinfo`` in a worker
    thread), in its order, without duplicates; ``ResolveError`` when there are none."""
    try:
        infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ResolveError(host, exc.strerror or str(exc)) from None
    except UnicodeError as exc:  # a label the IDNA codec refuses
        raise ResolveError(host, str(exc)) from None
    out: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0])
        if family in (socket.AF_INET, socket.AF_INET6) and ip not in out:
            out.append(ip)
    if not out:
        raise ResolveError(host, "no IPv4 or IPv6 address")
    return out


async def _lookup(host: str, lookup: Lookup | None) -> list[str]:
    ips = list(await (lookup or system_lookup)(host))
    if not ips:
        raise ResolveError(host, "no addresses")
    for ip in ips:
        if not _is_ip(ip):
            raise ResolveError(host, f"the resolver answered {ip!r}, not an IP address")
    return ips


async def resolve_all(target: HostPort, lookup: Lookup | None = None) -> list[Address]:
    """Every address ``target`` stands for (a literal IP: itself, no lookup)."""
    if target.is_ip:
        await trio.lowlevel.checkpoint()
        return [Address(target.host, target.port)]
    return [Address(ip, target.port) for ip in await _lookup(target.host, lookup)]


async def resolve_one(target: HostPort, lookup: Lookup | None = None) -> Address:
    """The one address a bind/advertise ``target`` stands for: its first IPv4 address, else
    its first address (Go's ``net.ResolveTCPAddr``)."""
    addrs = await resolve_all(target, lookup)
    first_v4 = next((a for a in addrs if ":" not in a.host), None)
    return first_v4 or addrs[0]


async def resolve_joins(
    texts: Sequence[str | Address], lookup: Lookup | None = None, default_port: int = 7946
) -> tuple[list[Address], list[str]]:
    """Resolve join targets: the addresses to push/pull with (every address of each name,
    in order) and one memberlist-worded error per target that did not resolve
    (``Failed to resolve HOST: reason``).  ``ValueError`` for a malformed target."""
    targets = [t if isinstance(t, Address) else join_target(t, default_port) for t in texts]
    seeds: list[Address] = []
    errors: list[str] = []
    for text, target in zip(texts, targets, strict=True):
        if isinstance(target, Address):
            seeds.append(target)
            continue
        try:
            seeds.extend(await resolve_all(target, lookup))
        except ResolveError as exc:
            errors.append(f"Failed to resolve {text}: {exc.reason}")
    return seeds, errors


def interface_addresses(name: str) -> list[str]:
    """The IP addresses of network interface ``name``: its IPv4 address first (none if it
    has none), then its IPv6 addresses.  ``OSError`` (``ENODEV``) if there is no such
    interface.  A few system calls and one small ``/proc`` read: no lookup, no waiting."""
    socket.if_nametoindex(name)  # OSError when the interface does not exist
    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("256s", name.encode()[:15])
        try:
            reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:  # EADDRNOTAVAIL: no IPv4 address
                raise
        else:
            out.append(socket.inet_ntoa(reply[20:24]))
    try:
        lines = _IF_INET6.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[5] == name:
            out.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return out


def pick_interface_address(addrs: Sequence[str]) -> str | None:
    """The address to bind on an interface: its first IPv4 address that is not link-local,
    else its first IPv6 address that is not (Serf skips self-assigned addresses too)."""
    usable = [a for a in addrs if not ipaddress.ip_address(a).is_link_local]
    return next((a for a in usable if ":" not in a), usable[0] if usable else None)
