"""The servers the agent starts beside its node: the RPC listeners, and the optional services,
statsd/statsite telemetry (``statsd_addr``, ``statsite_addr``), the Prometheus ``/metrics``
endpoint (``metrics_addr``) and mDNS discovery (``discover``).

Rules this module owns:

* **RPC** (``start_rpc``): always the Unix socket (``rpc_socket``, default one per user), TCP
  only when ``rpc_addr`` is set.  Only the runtime directory (``rpc.paths``) is created when
  missing: a mistyped ``--rpc-socket`` directory is an error, not a new directory.

* **Only what is asked for is imported**: before anything starts, ``require_packages`` looks
  for (does not import) ``prometheus_client`` and ``zeroconf`` when their option is set, so a
  missing package is a config error at start-up; ``agent.metrics`` (prometheus_client) is
  imported only when the endpoint starts, ``zeroconf`` only by ``agent.discover`` when
  discovery runs.  An agent without these options imports neither.
* **Start-up** (``OptionalServices.start``, after the RPC listeners, before the joins):
  telemetry, then ``/metrics``, then mDNS.  An endpoint address that cannot be bound or mDNS
  sockets that cannot be opened are logged (``metrics_bind_failed``, ``discover_start_failed``)
  and make the agent exit 1, as Serf does.
* **Stop**: the mDNS advertisement is withdrawn before the agent leaves (``stop``).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import trio

from serf_trio.api import Node
from serf_trio.rpc.paths import default_socket_path, in_runtime_dir
from serf_trio.rpc.server import RpcServer
from serf_trio.swim.api import Address

from .config import AgentConfig, ConfigError
from .facade import AgentFacade

if TYPE_CHECKING:
    from .discover import Discovery


async def start_rpc(
    nursery: trio.Nursery, facade: AgentFacade, node: Node, cfg: AgentConfig, log: Any
) -> None:
    """Start the RPC server (Unix socket, and TCP only when ``rpc_addr`` is set)."""
    path = str(cfg.rpc_socket) if cfg.rpc_socket is not None else default_socket_path()
    tcp = (cfg.rpc_addr.host, cfg.rpc_addr.port) if cfg.rpc_addr is not None else None
    # Only the runtime directory (rpc.paths) is created when missing: a mistyped
    # --rpc-socket directory is an error, not a new directory.
    server = RpcServer(
        facade,
        socket_path=path,
        tcp_addr=tcp,
        logger=log,
        make_dir=in_runtime_dir(path),
    )
    node.registry.register("rpc", server.statistics)
    await nursery.start(server.serve)


def require_packages(cfg: AgentConfig) -> None:
    """``ConfigError`` when an option asks for a package that is not installed."""
    if cfg.discover:
        from .discover import require_zeroconf

        require_zeroconf()  # imports zeroconf: only when discover is set
    if cfg.metrics_addr is not None:
        _require_prometheus_client()


def _require_prometheus_client() -> None:
    """``metrics_addr`` needs ``prometheus-client`` (looked for, not imported: the agent
    imports it only once the endpoint starts)."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(
            "metrics_addr needs the prometheus-client package: pip install 'serf-trio[metrics]'"
        )


class OptionalServices:
    """The services one agent runs beside its node, as its config asks."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self.metrics_bound: tuple[str, int] | None = None  # Prometheus /metrics, once serving
        self.mdns: Discovery | None = None

    async def start(
        self, nursery: trio.Nursery, node: Node, cfg: AgentConfig, bind: Address
    ) -> str | None:
        """Start the configured services in ``nursery``: None, or the status to stop with."""
        if cfg.statsd_addr is not None or cfg.statsite_addr is not None:
            from . import telemetry

            statsd = telemetry.from_config(cfg, node.registry, self._log)
            if statsd is not None:
                await nursery.start(statsd.run)
        if cfg.metrics_addr is not None and not await self._start_prometheus(nursery, node, cfg):
            return "metrics endpoint failed"
        if cfg.discover and not await self._start_discover(nursery, node, cfg, bind):
            return "mDNS discovery failed"
        return None

    async def stop(self) -> None:
        """Withdraw the mDNS advertisement (before the agent leaves)."""
        if self.mdns is not None:
            await self.mdns.stop()

    async def _start_prometheus(self, nursery: trio.Nursery, node: Node, cfg: AgentConfig) -> bool:
        """``metrics_addr``: Prometheus ``/metrics`` (``agent.metrics``, imported only now);
        False (logged) when the address cannot be bound."""
        from . import metrics as prometheus  # prometheus_client: only when asked for

        addr = cfg.metrics_addr
        assert addr is not None
        server = prometheus.MetricsServer(addr.host, addr.port, node.registry.snapshot, self._log)
        try:
            self.metrics_bound = await nursery.start(server.run)
        except OSError as exc:
            self._log.error("metrics_bind_failed", addr=f"{addr.host}:{addr.port}", error=str(exc))
            return False
        return True

    async def _start_discover(
        self, nursery: trio.Nursery, node: Node, cfg: AgentConfig, bind: Address
    ) -> bool:
        """``discover``: advertise over mDNS and join what is found (``agent.discover``);
        False (logged) when the mDNS sockets cannot be opened (Serf exits then too)."""
        from .discover import Discovery

        self.mdns = Discovery(
            cfg.discover,
            node,
            node_name=cfg.node_name,
            bind_host=bind.host,
            interface=cfg.interface,
            replay=cfg.replay_on_join,
            log=self._log,
        )
        try:
            await nursery.start(self.mdns.run)
        except OSError as exc:
            self._log.error("discover_start_failed", error=str(exc))
            return False
        return True
