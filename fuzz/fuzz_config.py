"""Fuzz the config file loader: ``agent.config.load_file`` for JSON and TOML, and what
``agent.config.load`` builds from its result.

Owns the rule of ``agent.config``: every problem in a config file is a ``ConfigError`` whose
message is one line naming the file (and the key); nothing else may escape, because the agent
would die with a traceback instead.  So this harness writes the input to a ``.json`` or
``.toml`` file (byte 0 chooses, the rest is the file), loads it, and then takes the result
the rest of ``load``'s way: merged as a source, turned into an ``AgentConfig`` (a node name
supplied, as ``load`` does), its notices, keys, ``swim_config`` and ``serf_config``.  Only
``ConfigError`` is allowed; a ``keyring_file`` key is not followed (the fuzzer must not read
arbitrary files; ``fuzz_keyring`` owns that reader).
"""

from __future__ import annotations

import dataclasses
import sys

from fuzzkit import REPO, Finding, dedupe, instrument, main

with instrument(__name__ == "__main__"):
    from fuzz_keyring import scratch

    from serf_trio.agent.config import (
        AgentConfig,
        ConfigError,
        configured_keys,
        load_file,
        merge,
        notices,
    )

_FIELDS = frozenset(f.name for f in dataclasses.fields(AgentConfig))


def check(data: bytes) -> None:
    suffix = ".toml" if data[:1] == b"t" else ".json"
    path = scratch("config" + suffix)
    path.write_bytes(data[1:])
    try:
        values = load_file(path)
    except ConfigError:
        return
    merged = merge(merge({}, values), {})
    merged.setdefault("node_name", "fuzz")
    if merged.get("role"):
        merged["tags"] = {**merged.get("tags", {}), "role": merged["role"]}
    try:
        cfg = AgentConfig(**{k: v for k, v in merged.items() if k in _FIELDS})
        notices(merged)
        if cfg.keyring_file is None:
            configured_keys(cfg)
        cfg.swim_config()
        cfg.serf_config()
    except ConfigError:
        return
    if not isinstance(cfg.node_name, str):
        raise Finding(f"node_name is {cfg.node_name!r}")


def seeds() -> list[bytes]:
    """The example configs under ``config/`` and a few small files of each format."""
    example_json = (REPO / "config" / "serf-trio.example.json").read_bytes()
    example_toml = (REPO / "config" / "serf-trio.example.toml").read_bytes()
    return dedupe(
        [
            b"j" + example_json,
            b"t" + example_toml,
            b'j{"node_name": "n1", "tags": {"role": "web"}, "retry_interval": "1m30s"}',
            b'j{"encrypt_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "profile": "wan"}',
            b't node_name = "n1"\nstart_join = ["10.0.0.1:7946"]\n[tags]\nrole = "db"\n',
            b'tevent_handlers = ["user:deploy=./deploy.sh"]\nreconnect_timeout = 3600\n',
        ]
    )


if __name__ == "__main__":
    main(check, seeds)
    sys.exit(0)
