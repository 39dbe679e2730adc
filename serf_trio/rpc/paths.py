"""Where the agent's RPC Unix socket lives by default, and where clients look for it.

Rule: ``$XDG_RUNTIME_DIR/serf-trio/rpc.sock`` when ``XDG_RUNTIME_DIR`` is set (a per-user agent),
else ``/run/serf-trio/rpc.sock`` (the system agent; systemd's ``RuntimeDirectory=serf-trio``,
where a service has no ``XDG_RUNTIME_DIR``).  Clients try the same places in the same order, so
a user's own agent wins over the system one, and a root shell that has ``XDG_RUNTIME_DIR`` (an
SSH session) still finds the system agent.  These runtime directories are the only ones an agent
creates (0700) when missing; the directory of any other ``--rpc-socket`` must exist.
Pure functions of the environment mapping: no I/O here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SOCKET_DIR_NAME = "serf-trio"
SOCKET_NAME = "rpc.sock"
SYSTEM_RUNTIME_DIR = "/run"
SYSTEM_SOCKET_PATH = os.path.join(SYSTEM_RUNTIME_DIR, SOCKET_DIR_NAME, SOCKET_NAME)


def default_socket_path(env: Mapping[str, str] | None = None) -> str:
    """The socket an agent binds when no ``--rpc-socket`` is given."""
    return candidate_socket_paths(env)[0]


def candidate_socket_paths(env: Mapping[str, str] | None = None) -> list[str]:
    """Socket paths a client tries, in order (no duplicates)."""
    env = os.environ if env is None else env
    out: list[str] = []
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if xdg:
        out.append(os.path.join(xdg, SOCKET_DIR_NAME, SOCKET_NAME))
    if SYSTEM_SOCKET_PATH not in out:
        out.append(SYSTEM_SOCKET_PATH)
    return out


def in_runtime_dir(path: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``path`` lies directly in one of the candidate sockets' directories: the only
    directories an agent creates when missing."""
    parent = os.path.dirname(os.path.abspath(path))
    return parent in (os.path.dirname(p) for p in candidate_socket_paths(env))
