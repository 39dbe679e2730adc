"""The agent's gossip addresses, worked out once at start-up from ``bind``, ``interface`` and
``advertise`` (Serf's ``setupAgent`` rules).

* ``bind`` and ``advertise`` may be host names: each resolves once, to its first IPv4 address
  (else its first address), as Go's ``net.ResolveTCPAddr`` does (``runtime.resolve``).  The
  lookup runs off the event loop.
* ``interface`` (Serf's ``-iface``): with a wildcard ``bind`` host (``0.0.0.0``, the default,
  or ``::``) the agent binds to the interface's first IPv4 address that is not link-local
  (else its first such IPv6 address), keeping the bind port; with an explicit bind host the
  interface must have that address, or the agent refuses to start, as Serf does.
* Every failure is a ``ConfigError`` naming the key and the name, which the agent logs as one
  ``config_invalid`` line before exiting 1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from serf_trio.runtime.resolve import (
    Lookup,
    ResolveError,
    interface_addresses,
    pick_interface_address,
    resolve_one,
)
from serf_trio.swim.api import Address

from .config import AgentConfig, ConfigError

_WILDCARDS = ("0.0.0.0", "::")


async def gossip_addresses(
    cfg: AgentConfig,
    log: Any,
    *,
    lookup: Lookup | None = None,
    interfaces: Callable[[str], list[str]] = interface_addresses,
) -> tuple[Address, Address | None]:
    """The address to bind and the one to advertise (``None``: the bound one)."""
    try:
        bind = await resolve_one(cfg.bind, lookup)
    except ResolveError as exc:
        raise ConfigError(f"config key 'bind': {exc}") from None
    if cfg.interface:
        bind = _on_interface(cfg.interface, bind, interfaces, log)
    advertise = None
    if cfg.advertise is not None:
        try:
            advertise = await resolve_one(cfg.advertise, lookup)
        except ResolveError as exc:
            raise ConfigError(f"config key 'advertise': {exc}") from None
    return bind, advertise


def _on_interface(
    name: str, bind: Address, interfaces: Callable[[str], list[str]], log: Any
) -> Address:
    try:
        addrs = interfaces(name)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"config key 'interface': no usable network interface {name!r} ({reason})"
        ) from None
    if bind.host in _WILDCARDS:
        ip = pick_interface_address(addrs)
        if ip is None:
            raise ConfigError(f"config key 'interface': interface {name!r} has no usable address")
        log.info("interface_address", interface=name, addr=ip)
        return Address(ip, bind.port)
    wanted = ipaddress.ip_address(bind.host)
    if not any(ipaddress.ip_address(a) == wanted for a in addrs):
        has = ", ".join(addrs) or "none"
        raise ConfigError(
            f"config keys 'interface' and 'bind': interface {name!r} has no address "
            f"{bind.host} (its addresses: {has})"
        )
    return bind
