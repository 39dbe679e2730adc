"""mDNS discovery: Serf's ``discover`` / ``-discover CLUSTER``.

What Serf 0.9.4 does (``cmd/serf/command/agent/mdns.go`` with ``hashicorp/mdns`` v1.0.1), and
serf-trio with it:

* **Advertisement**: service ``_serf_CLUSTER._tcp`` in ``local.``, instance = the node name,
  SRV port = the gossip port, A (AAAA) = the advertised gossip IP, one TXT string
  ``Serf 'CLUSTER' cluster``.  hashicorp/mdns' query client only reports an instance that has
  an address, a port and a TXT record, and it links the address to the instance through the
  SRV target, so all four records are sent together (zeroconf answers a PTR question with the
  PTR, then SRV, TXT and A as additionals, in that order).  Serf's SRV target is the machine's
  host name; serf-trio uses a name made from the node name (``host_name``), as several agents
  on one host (network namespaces, containers) would otherwise claim one host name for
  different addresses.
* **Polling**: a PTR query at start-up and every 60 s (``POLL_INTERVAL``).  serf-trio also
  keeps a zeroconf ``ServiceBrowser`` listening, so an agent that starts later is found from
  its announcement within a second or so.
* **Joining**: what is found is batched (the join is made once nothing new arrived for
  100 ms, ``QUIET_INTERVAL``) and joined through ``Node.join`` (with ``replay_on_join``);
  an ``IP:PORT`` is joined once.  Unlike Serf, serf-trio skips its own advertisement and
  forgets an address whose join failed, so the next poll tries it again (Serf never does).
* **Interface**: Serf's ``interface`` (``-iface``) also picks the multicast interface; without
  it serf-trio uses the bind IP when that is not a wildcard, else the system's default.  (The
  ``mdns`` block of Serf 0.10 is not in 0.9.4 and stays ignored.)
* On stop the service is withdrawn (goodbye packets) before the graceful leave.

Why a thread: there is no maintained trio-native mDNS library (PyPI has none built on trio;
the asyncio ones are python-zeroconf and its abandoned fork aiozeroconf).  python-zeroconf runs
its own asyncio loop in a thread of its own (its synchronous ``Zeroconf`` class); this module
is the only one that touches it.  Calls into it run in worker threads (``trio.to_thread``), and
its browser thread hands what it found to trio through a memory channel
(``trio.from_thread.run_sync(send.send_nowait, ..., trio_token=...)``).  zeroconf is an
optional dependency (the ``mdns`` extra), imported only when ``discover`` is set
(``require_zeroconf``).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from serf_trio.api import JoinError, Node, NotRunningError
from serf_trio.runtime.resolve import interface_addresses

from .config import ConfigError

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, ServiceStateChange, Zeroconf

POLL_INTERVAL = 60.0  # Serf's mdnsPollInterval
QUIET_INTERVAL = 0.1  # Serf's mdnsQuietInterval: join once nothing new came for this long
RESOLVE_TIMEOUT_MS = 3000  # how long the browser thread waits for a found service's records
STOP_TIMEOUT = 3.0  # withdrawing the service (goodbyes) and closing zeroconf
INSTALL_HINT = "pip install 'serf-trio[mdns]' (or: pip install zeroconf)"


def require_zeroconf() -> None:
    """``ConfigError`` with an install hint when zeroconf is not installed."""
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"config key 'discover': mDNS discovery needs the zeroconf package; {INSTALL_HINT}"
        ) from None


def service_type(cluster: str) -> str:
    """The DNS-SD service type Serf registers and browses: ``_serf_CLUSTER._tcp.local.``."""
    return f"_serf_{cluster}._tcp.local."


def instance_name(node_name: str, cluster: str) -> str:
    """The service instance: the node name under the service type (Serf's ``NodeName``)."""
    return f"{node_name}.{service_type(cluster)}"


def txt_record(cluster: str) -> bytes:
    """The TXT record's wire form: Serf's single string ``Serf 'CLUSTER' cluster``."""
    text = f"Serf '{cluster}' cluster".encode()[:255]
    return bytes([len(text)]) + text


def host_name(node_name: str) -> str:
    """The SRV target that carries the A/AAAA record: one per node (a DNS-safe label from the
    node name plus a short hash of it, so that different names never share one)."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", node_name).strip("-")[:40] or "node"
    digest = hashlib.sha256(node_name.encode()).hexdigest()[:8]
    return f"serf-{label}-{digest}.local."


def join_address(host: str, port: int) -> str:
    """``IP:PORT`` (``[IPv6]:PORT``), as Serf formats what it joins."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def pick_address(addresses: list[str]) -> str | None:
    """The address to join among a service's addresses: the first IPv4 one, else the first
    IPv6 one that is not link-local (those need a zone), else ``None``."""
    parsed = []
    for text in addresses:
        try:
            parsed.append(ipaddress.ip_address(text))
        except ValueError:
            continue
    for ip in parsed:
        if ip.version == 4:
            return str(ip)
    for ip in parsed:
        if not ip.is_link_local:
            return str(ip)
    return None


@dataclass
class PeerTracker:
    """Which found addresses to join (pure bookkeeping, no I/O).  ``own`` is our advertised
    ``IP:PORT``; an address is offered once until its join fails."""

    own: str
    seen: set[str] = field(default_factory=set)  # joined (or being joined)
    pending: list[str] = field(default_factory=list)

    def offer(self, addr: str) -> bool:
        """Queue ``addr`` for the next batch; False when it is ours, joined or queued."""
        if addr == self.own or addr in self.seen or addr in self.pending:
            return False
        self.pending.append(addr)
        return True

    def take(self) -> list[str]:
        """The next batch (marked as seen)."""
        batch, self.pending = self.pending, []
        self.seen.update(batch)
        return batch

    def failed(self, batch: list[str]) -> None:
        """The batch could not be joined: offer its addresses again later."""
        self.seen.difference_update(batch)


@dataclass(frozen=True)
class Found:
    """The browser thread found (or updated) service ``name`` at ``addr`` (``IP:PORT``)."""

    name: str
    addr: str


@dataclass(frozen=True)
class Gone:
    name: str


class Discovery:
    """Advertise this node and join the peers found, until cancelled or ``stop``-ped."""

    def __init__(
        self,
        cluster: str,
        node: Node,
        *,
        node_name: str,
        bind_host: str,
        interface: str | None,
        replay: bool,
        log: Any,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.node_name = node_name
        self.bind_host = bind_host
        self.interface = interface
        self.replay = replay
        self._log = log
        self.poll_interval = poll_interval
        self.known: dict[str, str] = {}  # instance name -> IP:PORT, as last found
        self._zc: Zeroconf | None = None
        self._browser: Any = None
        self._info: ServiceInfo | None = None
        self._stopped = False

    # -- zeroconf side (worker threads) -----------------------------------------------------

    def _open(self, ipv6: bool) -> Zeroconf:
        from zeroconf import InterfaceChoice, IPVersion, Zeroconf

        interfaces: Any = InterfaceChoice.Default
        if self.interface:  # Serf's -iface is also the multicast interface
            interfaces = [ip for ip in interface_addresses(self.interface) if ipv6 or ":" not in ip]
        elif not ipaddress.ip_address(self.bind_host).is_unspecified:
            interfaces = [self.bind_host]
        version = IPVersion.All if ipv6 else IPVersion.V4Only
        return Zeroconf(interfaces=interfaces, ip_version=version)

    def _service_info(self, addr: Any) -> ServiceInfo:
        from zeroconf import ServiceInfo

        return ServiceInfo(
            service_type(self.cluster),
            instance_name(self.node_name, self.cluster),
            port=addr.port,
            properties=txt_record(self.cluster),
            server=host_name(self.node_name),
            addresses=[ipaddress.ip_address(addr.host).packed],
        )

    def _register(self, zc: Zeroconf, info: ServiceInfo) -> None:
        # strict=False: Serf's service names break RFC 6335's rules (underscore, > 15 chars).
        zc.register_service(info, strict=False)

    def _query(self, zc: Zeroconf) -> None:
        """One PTR question for the service type (Serf's poll); answers reach the browser."""
        from zeroconf._dns import DNSQuestion
        from zeroconf._protocol.outgoing import DNSOutgoing
        from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_PTR

        out = DNSOutgoing(_FLAGS_QR_QUERY)
        out.add_question(DNSQuestion(service_type(self.cluster), _TYPE_PTR, _CLASS_IN))
        zc.send(out)

    def _close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        if self._browser is not None:
            self._browser.cancel()
        if self._info is not None:
            zc.unregister_service(self._info)  # goodbye packets: peers drop us at once
        zc.close()

    def _on_change(
        self,
        token: trio.lowlevel.TrioToken,
        send: trio.MemorySendChannel[Found | Gone],
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """The browser thread's callback: resolve the service, hand it to trio."""
        from zeroconf import ServiceStateChange

        event: Found | Gone | None = None
        if state_change is ServiceStateChange.Removed:
            event = Gone(name)
        else:
            info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_TIMEOUT_MS)
            if info is not None and info.port:
                host = pick_address(info.parsed_addresses())
                if host is not None:
                    event = Found(name, join_address(host, info.port))
        if event is None:
            return
        # RunFinished/Closed: the agent stopped meanwhile; WouldBlock: a flood (Serf drops too).
        with contextlib.suppress(trio.RunFinishedError, trio.ClosedResourceError, trio.WouldBlock):
            trio.from_thread.run_sync(send.send_nowait, event, trio_token=token)

    # -- trio side ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start zeroconf, browse and advertise, then join what is found until cancelled.
        ``OSError`` if the mDNS sockets cannot be opened (before ``started``)."""
        from zeroconf import ServiceBrowser

        addr = self.node.address
        own = join_address(addr.host, addr.port)
        tracker = PeerTracker(own)
        token = trio.lowlevel.current_trio_token()
        send, recv = trio.open_memory_channel[Found | Gone](256)
        ipv6 = ipaddress.ip_address(addr.host).version == 6
        zc = self._zc = await trio.to_thread.run_sync(self._open, ipv6)
        try:
            with send, recv:

                def on_change(**kw: Any) -> None:
                    self._on_change(token, send, **kw)

                stype = service_type(self.cluster)
                self._browser = await trio.to_thread.run_sync(
                    lambda: ServiceBrowser(zc, stype, handlers=[on_change])
                )
                info = self._service_info(addr)
                self._log.info("discover_started", cluster=self.cluster, service=stype, addr=own)
                task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._advertise, zc, info)
                    await self._join_loop(tracker, recv, zc)
                    nursery.cancel_scope.cancel()
        finally:
            await self.stop()

    async def _advertise(self, zc: Zeroconf, info: ServiceInfo) -> None:
        """Register the service (zeroconf probes for the name first: about a second).  A
        failure is logged: the agent still finds and joins its peers (who find it then)."""
        try:
            await trio.to_thread.run_sync(self._register, zc, info, abandon_on_cancel=True)
        except Exception as exc:  # zeroconf's: the name is taken, the loop stopped, ...
            if not self._stopped:
                self._log.warning("discover_advertise_failed", error=repr(exc))
            return
        self._info = info
        self._log.info("discover_advertised", name=info.name)

    async def stop(self) -> None:
        """Withdraw the advertisement and close zeroconf (bounded; safe to call twice)."""
        if self._stopped:
            return
        self._stopped = True
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT) as scope:
            await trio.to_thread.run_sync(self._close, abandon_on_cancel=True)
        self._log.info("discover_stopped", timed_out=scope.cancelled_caught)

    def _handle(self, event: Found | Gone, tracker: PeerTracker) -> bool:
        if isinstance(event, Gone):
            self.known.pop(event.name, None)
            return False
        if event.name.lower() == instance_name(self.node_name, self.cluster).lower():
            return False  # ourselves
        self.known[event.name] = event.addr
        return tracker.offer(event.addr)

    async def _join_loop(
        self, tracker: PeerTracker, recv: trio.MemoryReceiveChannel[Found | Gone], zc: Zeroconf
    ) -> None:
        join_at = math.inf
        poll_at = trio.current_time() + self.poll_interval
        while True:
            with trio.move_on_at(min(join_at, poll_at)):
                event = await recv.receive()
                if self._handle(event, tracker):
                    join_at = trio.current_time() + QUIET_INTERVAL
                continue
            now = trio.current_time()
            if now >= poll_at:
                poll_at = now + self.poll_interval
                await trio.to_thread.run_sync(self._query, zc)
                # Known peers whose join failed are offered again.
                if any([tracker.offer(a) for a in self.known.values()]):
                    join_at = min(join_at, now + QUIET_INTERVAL)
            if now >= join_at:
                join_at = math.inf
                if not await self._join(tracker):
                    return

    async def _join(self, tracker: PeerTracker) -> bool:
        """Join the pending batch; False once the node no longer runs."""
        batch = tracker.take()
        try:
            n = await self.node.join(*batch, replay=self.replay)
        except JoinError as exc:
            tracker.failed(batch)
            self._log.warning("discover_failed", addrs=batch, errors=list(exc.errors))
        except NotRunningError:
            return False
        else:
            self._log.info("discover_joined", joined=n, addrs=batch)
        return True
