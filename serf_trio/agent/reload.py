"""SIGHUP: re-read the configuration and apply what can change without leaving the cluster.

Rules it owns:

* The same config sources (flags, files, config dirs) are read again, off the event loop;
  sd_notify says ``RELOADING=1`` first and ``READY=1`` (with the status) when done.
* Applied live: ``log_level``, ``event_handlers`` (unchanged handlers keep their queues, removed
  ones finish what they have; every handler's script is checked again and one a shell could
  not start is a warning, ``handler_not_runnable``), ``tags`` (from the config or the re-read
  tags file, through ``LocalTags``, so the cluster sees member-update) and the encryption
  settings (``reload_encryption``).  Every other changed key is logged as needing a restart
  (``reload_needs_restart``).
* **A bad reload is logged and the running config kept**: an unreadable config changes nothing
  (``reload_failed``); a refused tag change or an unusable key is logged and the rest applies.
* **Encryption** (``reload_encryption``): ``encrypt_algorithm``,
  ``encrypt_verify_incoming``/``_outgoing`` apply from the next packet on, and encryption turns
  on or off (the live keyring stays authoritative while it is on): the plaintext -> encrypted
  procedure needs no restart.  The ``Envelope`` changed here is the node's own
  (``Node.envelope``), shared by the transport and the Serf core.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import trio

from serf_trio.rpc.api import AgentError
from serf_trio.runtime.handlers import HandlerSupervisor
from serf_trio.runtime.logs import LogSettings
from serf_trio.wire.crypto import Algorithm, Envelope, check_primary
from serf_trio.wire.keyring import Keyring, KeyringError

from .config import AgentConfig, ConfigError, load
from .files import read_tags_file
from .notify import Notifier
from .tags import LocalTags

RELOADABLE = (
    "log_level",
    "event_handlers",
    "tags",
    "encrypt_key",
    "keyring_file",
    "encrypt_algorithm",
    "encrypt_verify_incoming",
    "encrypt_verify_outgoing",
)


class Reloader:
    """Applies a SIGHUP (module docstring) to the running agent's parts."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        settings: LogSettings,
        supervisor: HandlerSupervisor,
        tags: LocalTags,
        envelope: Envelope,
        notifier: Notifier,
        status: Callable[[], str],
        logger: Any,
    ) -> None:
        self._argv = list(argv)
        self._settings = settings
        self._supervisor = supervisor
        self._tags = tags
        self._envelope = envelope
        self._notifier = notifier
        self._status = status
        self._log = logger

    async def reload(self, old: AgentConfig) -> AgentConfig:
        """Re-read the config and apply it; the config now in force (``old`` if unreadable)."""
        self._notifier.reloading()
        try:
            loaded = await trio.to_thread.run_sync(load, self._argv)
            new = loaded.config
            tags = new.tags
            if new.tags_file is not None:
                tags = await trio.to_thread.run_sync(read_tags_file, new.tags_file)
        except ConfigError as exc:
            self._log.error("reload_failed", error=str(exc))
            self._notifier.ready(status=self._status())
            return old
        changed: list[str] = []
        if new.log_level != old.log_level:
            self._settings.level = new.log_level
            changed.append("log_level")
        if new.event_handlers != old.event_handlers:
            # Unchanged handlers keep their queues; removed ones finish what they have.
            self._supervisor.update(new.event_handlers)
            changed.append("event_handlers")
        # Every reload checks the scripts again (one may have been removed or fixed since).
        self._supervisor.check_commands()
        try:
            if await self._tags.replace(tags):
                changed.append("tags")
        except AgentError as exc:
            self._log.error("reload_failed", error=str(exc))
        try:
            changed.extend(reload_encryption(self._envelope, old, new, loaded.keys, self._log))
        except KeyringError as exc:
            self._log.error("reload_failed", error=str(exc))
        needs_restart = [
            f.name
            for f in dataclasses.fields(AgentConfig)
            if f.name not in RELOADABLE and getattr(new, f.name) != getattr(old, f.name)
        ]
        env = self._envelope
        current = dataclasses.replace(
            old,
            log_level=new.log_level,
            event_handlers=new.event_handlers,
            tags=dict(tags),
            encrypt_key=new.encrypt_key,
            keyring_file=new.keyring_file,
            encrypt_algorithm=env.algorithm.value,
            encrypt_verify_incoming=env.verify_incoming,
            encrypt_verify_outgoing=env.verify_outgoing,
        )
        self._log.info(
            "config_reloaded",
            changed=changed,
            log_level=new.log_level,
            event_handlers=[h.text for h in new.event_handlers],
        )
        if needs_restart:
            self._log.warning("reload_needs_restart", keys=needs_restart)
        self._notifier.ready(status=self._status())
        return current


def reload_encryption(
    env: Envelope,
    old: AgentConfig,
    new: AgentConfig,
    keys: tuple[bytes, ...] | None,
    log: Any,
) -> list[str]:
    """Apply the reloadable encryption settings to ``env``; the names of those that changed.

    Turning encryption on takes the configured keys; while it is on, the live keyring
    (rotated by key queries, written to the keyring file) stays authoritative, and a
    configured key it lacks is logged as ignored (``reload_keys_ignored``).  Each switch
    changes only what this node accepts or sends from the next packet on, which is what
    makes the plaintext -> encrypted procedure safe one node at a time (README).
    ``KeyringError`` (nothing changed) when the new cipher cannot send with the primary.
    """
    algorithm = Algorithm(new.encrypt_algorithm)
    keyring = env.keyring
    if keyring is None and keys:
        keyring = Keyring(keys)
    elif not keys:
        keyring = None
    if keyring is not None:
        check_primary(algorithm, keyring.primary)
    changed: list[str] = []
    if (
        keyring is not None
        and keyring is env.keyring
        and keys
        and (new.encrypt_key, new.keyring_file) != (old.encrypt_key, old.keyring_file)
        and not set(keys) <= set(keyring.keys)
    ):
        # A changed encrypt_key (or keyring file) does not replace the live keyring: say so
        # rather than leave the operator believing the new key is in use.
        log.warning(
            "reload_keys_ignored",
            keys=len(keyring),
            hint="while encryption is on the live keyring stays authoritative; rotate it "
            "with `serf-trio keys --install/--use/--remove` (or restart the agent)",
        )
    if (keyring is None) != (env.keyring is None):
        changed.append("encryption_on" if keyring is not None else "encryption_off")
        if keyring is not None and new.encrypt_verify_incoming:
            log.warning(
                "encryption_enabled_verifying",
                hint="plaintext peers are refused from now on; to move a live cluster, "
                "turn the key on with encrypt_verify_incoming/outgoing = false first",
            )
    if algorithm is not env.algorithm:
        changed.append("encrypt_algorithm")
    if new.encrypt_verify_incoming != env.verify_incoming:
        changed.append("encrypt_verify_incoming")
    if new.encrypt_verify_outgoing != env.verify_outgoing:
        changed.append("encrypt_verify_outgoing")
    env.keyring = keyring
    env.algorithm = algorithm
    env.verify_incoming = new.encrypt_verify_incoming
    env.verify_outgoing = new.encrypt_verify_outgoing
    return changed
