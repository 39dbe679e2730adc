"""How the agent finds its cluster: the start join, ``retry_join`` and the snapshot rejoin.

All three go through ``Node.join`` (push/pull with each seed; ``JoinError`` with one text per
seed when none answered).  Seeds are passed as written: ``Node.join`` looks host names up on
every call and tries every address a name resolves to (``runtime.resolve``), so each retry
follows a DNS record that changed.  Rules they own:

* **Start join** (``start_join``): after the RPC listeners are up and before ``READY=1``; a
  failed start join is fatal, as in Serf (the caller exits 1).
* **Retry join** (``retry_join``): in the background, every ``retry_interval``, at most
  ``retry_max`` attempts (0 = forever); Serf exits when it gives up, so ``give_up`` is called
  (the agent then stops with exit status 1).
* **Snapshot rejoin** (``rejoin``): after a restart with a snapshot, the members last seen
  alive are tried one at a time in random order (serf handleRejoin), without an explicit join
  and without the user events the cluster already has; the first that answers ends it.
* ``replay_on_join`` applies to the start and retry joins, never to the rejoin.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import trio

from serf_trio.api import JoinError, Node, NotRunningError

from .config import AgentConfig, parse_join_address


async def start_join(node: Node, cfg: AgentConfig, log: Any) -> None:
    """Join ``start_join``; ``JoinError`` (logged) if no seed answered."""
    try:
        n = await node.join(*cfg.start_join, replay=cfg.replay_on_join)
    except JoinError as exc:
        log.error("start_join_failed", errors=list(exc.errors))
        raise
    log.info("start_join_done", joined=n)


async def retry_join(node: Node, cfg: AgentConfig, log: Any, give_up: Callable[[], None]) -> None:
    """Join ``retry_join`` until it works or ``retry_max`` attempts failed (then ``give_up``)."""
    attempt = 0
    while True:
        attempt += 1
        try:  # names are resolved again on each attempt (inside Node.join)
            n = await node.join(*cfg.retry_join, replay=cfg.replay_on_join)
            log.info("retry_join_done", joined=n, attempt=attempt)
            return
        except JoinError as exc:
            log.warning("retry_join_failed", attempt=attempt, errors=list(exc.errors))
        except NotRunningError:
            return  # the node left or stopped meanwhile
        if cfg.retry_max and attempt >= cfg.retry_max:
            log.error("retry_join_gave_up", attempts=attempt)
            give_up()
            return
        await trio.sleep(cfg.retry_interval)


async def rejoin(
    node: Node, targets: Mapping[str, str], log: Any, rng: random.Random | None = None
) -> None:
    """Snapshot restart: rejoin the members last seen alive (``name -> address``), one at a
    time in random order, without replaying user events."""
    items = list(targets.items())
    (rng or random.Random()).shuffle(items)
    for name, text in items:
        try:
            parse_join_address(text)
        except ValueError:
            log.warning("snapshot_rejoin_skipped", member=name, addr=text)
            continue
        try:
            await node.join(text, replay=False)
        except JoinError as exc:
            log.debug("snapshot_rejoin_attempt_failed", member=name, errors=exc.errors)
            continue
        except NotRunningError:
            return
        log.info("snapshot_rejoined", member=name, addr=text)
        return
    log.warning("snapshot_rejoin_failed", tried=len(items))
