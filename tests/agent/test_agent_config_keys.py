"""Every Serf agent config key: honoured (plumbed to where it acts) or accepted with one warning;
Serf's one-dash flags; syslog; and an existing Serf config, with every key of Serf's agent
documentation, starting both serf-trio and HashiCorp's serf unchanged."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from agent_harness import make_agent
from helpers import free_port, wait_for

from serf_trio.agent.config import CONFIG_KEYS, IGNORED_KEYS, ConfigError, load
from serf_trio.agent.main import main
from serf_trio.rpc.client import ConnectError, RpcClient
from serf_trio.runtime.logs import LogSettings, SyslogWriter, configure
from serf_trio.swim.config import PROFILES

K32 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # bytes 0..31
SERF = shutil.which("serf") or "/usr/bin/serf"
WAIT = 20.0

# Serf 0.9.4's agent config keys (cmd/serf/command/agent/config.go, mapstructure tags).
SERF_094_KEYS = frozenset(
    {
        "node_name",
        "role",
        "disable_coordinates",
        "tags",
        "tags_file",
        "bind",
        "advertise",
        "encrypt_key",
        "keyring_file",
        "log_level",
        "rpc_addr",
        "rpc_auth",
        "protocol",
        "replay_on_join",
        "query_response_size_limit",
        "query_size_limit",
        "user_event_size_limit",
        "start_join",
        "event_handlers",
        "profile",
        "snapshot_path",
        "leave_on_terminate",
        "skip_leave_on_interrupt",
        "discover",
        "interface",
        "reconnect_interval",
        "reconnect_timeout",
        "tombstone_timeout",
        "disable_name_resolution",
        "enable_syslog",
        "syslog_facility",
        "retry_join",
        "retry_max_attempts",
        "retry_interval",
        "rejoin_after_leave",
        "enable_compression",
        "statsite_addr",
        "statsd_addr",
        "broadcast_timeout",
    }
)
# Later Serf versions add these two.
SERF_LATER_KEYS = frozenset({"validate_node_names", "mdns"})


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path


# -- each key where it acts --------------------------------------------------------------------


def test_every_serf_key_is_accepted() -> None:
    assert SERF_094_KEYS | SERF_LATER_KEYS <= CONFIG_KEYS


def test_cluster_switches_reach_the_core(tmp_path: Path) -> None:
    doc = {
        "disable_coordinates": True,
        "disable_name_resolution": True,
        "enable_compression": False,
        "profile": "wan",
    }
    cfg = load(["--config-file", str(write(tmp_path / "c.json", doc))], hostname="h").config
    serf = cfg.serf_config()
    assert serf.disable_coordinates and not serf.enable_name_conflict_resolution
    swim = cfg.swim_config()
    assert swim.enable_compression is False
    assert swim.probe_interval == PROFILES["wan"].probe_interval  # the profile is kept
    defaults = load([], hostname="h").config
    # Unset, compression is the profile's: only where it pays (WAN links), not on a LAN.
    assert defaults.enable_compression is None
    assert defaults.swim_config().enable_compression is False
    wan = load(["--profile=wan"], hostname="h").config
    assert wan.swim_config().enable_compression is True
    forced = load(["--profile=lan", "-disable-compression=false"], hostname="h").config
    assert forced.swim_config().enable_compression is True  # written as true: honoured
    assert defaults.serf_config().enable_name_conflict_resolution
    assert not defaults.serf_config().disable_coordinates
    # Serf's -disable-compression flag, in both spellings; a later flag value wins.
    assert load(["--disable-compression"], hostname="h").config.enable_compression is False
    assert load(["-disable-compression=false"], hostname="h").config.enable_compression is True


@pytest.mark.realnet
def test_a_running_agent_uses_them(tmp_path: Path) -> None:
    async def body() -> None:
        # A wildcard bind with an interface binds the interface's IPv4 address.
        agent = make_agent(tmp_path, "sw", "--disable-compression", "-bind=0.0.0.0:0", "-iface=lo")
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            rt = agent.node.runtime
            assert rt.config.enable_compression is False  # where memberlist decides
            assert agent.addr is not None and agent.addr.host == "127.0.0.1"
            nursery.cancel_scope.cancel()
        doc = {"disable_coordinates": True, "disable_name_resolution": True}
        conf = write(tmp_path / "sw2.json", doc)
        agent = make_agent(tmp_path, "sw2", f"--config-file={conf}")
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            sc = agent.node.runtime.serf_config
            assert sc.disable_coordinates and not sc.enable_name_conflict_resolution
            nursery.cancel_scope.cancel()

    trio.run(body)


def test_role_is_the_role_tag_and_deprecated(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.json", {"role": "lb", "tags": {"role": "web", "dc": "1"}})
    loaded = load(["--config-file", str(conf)], hostname="h")
    assert loaded.config.tags == {"role": "lb", "dc": "1"}  # Serf: role wins over tags.role
    (notice,) = loaded.notices
    assert (notice.key, notice.event) == ("role", "config_key_deprecated")
    assert load(["-role", "db"], hostname="h").config.tags == {"role": "db"}
    with pytest.raises(ConfigError, match=r"'role'.*tags_file"):
        load(["--role=x", f"--tags-file={tmp_path / 't.json'}"], hostname="h")


def test_retry_max_attempts_is_serfs_name_for_retry_max(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.json", {"retry_max_attempts": 4})
    assert load(["--config-file", str(conf)], hostname="h").config.retry_max == 4
    assert load(["--config-file", str(conf), "--retry-max=2"], hostname="h").config.retry_max == 2


def test_syslog_and_interface_keys(tmp_path: Path) -> None:
    doc = {"enable_syslog": True, "syslog_facility": "local3", "interface": "eth1"}
    cfg = load(["--config-file", str(write(tmp_path / "c.json", doc))], hostname="h").config
    assert (cfg.enable_syslog, cfg.syslog_facility, cfg.interface) == (True, "LOCAL3", "eth1")
    cfg = load(["-syslog", "-iface=lo"], hostname="h").config
    assert (cfg.enable_syslog, cfg.syslog_facility, cfg.interface) == (True, "LOCAL0", "lo")


def test_ignored_keys_give_one_notice_each_and_only_when_they_ask_for_something(
    tmp_path: Path,
) -> None:
    asking = {
        "mdns": {"interface": "eth0"},
        "validate_node_names": True,
    }
    a = write(tmp_path / "a.json", asking)
    b = write(tmp_path / "b.json", {"mdns": {"a": 1}})  # a second source: still one notice
    loaded = load(["--config-file", str(a), "--config-file", str(b)], hostname="h")
    assert [n.key for n in loaded.notices] == list(IGNORED_KEYS)
    for n in loaded.notices:
        assert n.event == "config_key_ignored" and n.hint == IGNORED_KEYS[n.key]
    idle = {"discover": "", "mdns": {}, "validate_node_names": False}
    assert load(["--config-file", str(write(tmp_path / "c.json", idle))]).notices == ()
    discovering = load(["--discover=x"], hostname="h")  # honoured (agent.discover)
    assert discovering.notices == () and discovering.config.discover == "x"


def test_settings_that_cannot_take_effect_are_noticed() -> None:
    loaded = load(["--protocol=4", "--rejoin"], hostname="h")
    assert {n.key for n in loaded.notices} == {"protocol", "rejoin_after_leave"}
    assert load(["--rejoin", "--snapshot=/x/snap"], hostname="h").notices == ()


def test_serf_one_dash_flags(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.json", {"node_name": "from-file"})
    cfg = load(
        [
            "-config-file",
            str(conf),
            "-bind=127.0.0.1:7000",
            "-join",
            "10.0.0.2",
            "-replay",
            "-rejoin=false",
            "-tag",
            "a=b",
            "-retry-max=3",
            "-log-level=debug",
        ],
        hostname="h",
    ).config
    assert cfg.node_name == "from-file" and str(cfg.bind) == "127.0.0.1:7000"
    assert cfg.start_join == ("10.0.0.2",) and cfg.replay_on_join is True
    assert cfg.rejoin_after_leave is False and cfg.tags == {"a": "b"}
    assert (cfg.retry_max, cfg.log_level) == (3, "DEBUG")
    with pytest.raises(ConfigError, match="unrecognized arguments: -frobnicate"):
        load(["-frobnicate"], hostname="h")


# -- syslog -------------------------------------------------------------------------------------


@pytest.fixture
def syslog_socket() -> Iterator[tuple[str, socket.socket]]:
    """A stand-in for /dev/log: a Unix datagram socket in a short temporary directory."""
    with tempfile.TemporaryDirectory(prefix="sl") as d:
        path = os.path.join(d, "log")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5.0)
        with sock:
            yield path, sock


def datagrams(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(65536).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5.0)
    return out


def test_syslog_lines_carry_the_facility_and_serfs_priorities(
    syslog_socket: tuple[str, socket.socket], restore_logging: None
) -> None:
    path, sock = syslog_socket
    writer = SyslogWriter("local3", path)
    buf = io.StringIO()
    configure(LogSettings(level="INFO"), stream=buf, syslog=writer)
    log = structlog.get_logger().bind(node="n1")
    log.debug("hidden")  # below the output level: neither stderr nor syslog
    log.info("member_join", member="n2")
    log.warning("member_failed", member="n3")
    log.error("start_join_failed")
    lines = datagrams(sock)
    pid = os.getpid()
    local3 = 19 * 8
    assert len(lines) == 3
    assert lines[0].startswith(f"<{local3 + 5}>")  # INFO -> notice, as Serf
    assert lines[0].endswith(f" serf-trio[{pid}]: agent: member_join member=n2")
    assert lines[1].startswith(f"<{local3 + 4}>") and "member_failed member=n3" in lines[1]
    assert lines[2].startswith(f"<{local3 + 3}>")
    # stderr keeps its JSON lines.
    assert [json.loads(x)["event"] for x in buf.getvalue().splitlines()] == [
        "member_join",
        "member_failed",
        "start_join_failed",
    ]
    assert (writer.sent, writer.dropped) == (3, 0)
    sock.close()
    os.unlink(path)
    log.info("after_syslog_went_away")  # dropped and counted, never raised
    assert writer.dropped == 1
    writer.close()


def test_agent_main_sends_its_lines_to_syslog(
    tmp_path: Path,
    syslog_socket: tuple[str, socket.socket],
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, sock = syslog_socket
    conf = write(tmp_path / "c.json", {"enable_syslog": True, "syslog_facility": "LOCAL5"})
    argv = [
        f"-config-file={conf}",
        "--node=sys",
        "--bind=127.0.0.1:0",
        "--profile=local",
        f"--rpc-socket={tmp_path / 'sys.sock'}",
        "--join=127.0.0.1:1",  # nobody there: the start join fails and the agent exits 1
    ]
    assert main(argv, syslog_path=path) == 1
    lines = datagrams(sock)
    local5 = 21 * 8
    assert any(x.startswith(f"<{local5 + 5}>") and "agent: agent_stopped" not in x for x in lines)
    failed = [x for x in lines if "agent: start_join_failed" in x]
    assert len(failed) == 1 and failed[0].startswith(f"<{local5 + 3}>")
    err = capsys.readouterr().err
    assert "start_join_failed" in err and all(json.loads(x) for x in err.splitlines())


def test_unreachable_syslog_stops_the_start(
    tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-log")
    assert main(["--syslog", "--node=x"], syslog_path=missing) == 1
    (line,) = capsys.readouterr().err.splitlines()
    rec = json.loads(line)
    assert rec["event"] == "config_invalid"
    assert "'enable_syslog'" in rec["error"] and missing in rec["error"]


# -- an existing Serf config -----------------------------------------------------------------


def serf_config(tmp_path: Path, name: str, bind_port: int, rpc_port: int) -> dict[str, Any]:
    """A Serf agent config as an operator would have it, with every key of Serf's agent
    documentation except the ones Serf itself refuses together (``tags_file`` with ``tags``
    or ``role``, ``keyring_file`` with ``encrypt_key``: see ``serf_config_files``).
    ``enable_syslog`` is false: test machines run no syslog daemon and Serf (like serf-trio)
    refuses to start without one."""
    return {
        "node_name": name,
        "role": "web",
        "disable_coordinates": False,
        "tags": {"dc": "east", "rack": "r1"},
        "bind": f"127.0.0.1:{bind_port}",
        "interface": "lo",
        "advertise": f"localhost:{bind_port}",
        "discover": "web-cluster",
        "encrypt_key": K32,
        "log_level": "info",
        "profile": "lan",
        "protocol": 5,
        "rpc_addr": f"127.0.0.1:{rpc_port}",
        "rpc_auth": "s3cret",
        "event_handlers": ["member-join,member-leave=/bin/true", "user:deploy=/bin/true"],
        "start_join": [f"localhost:{bind_port}"],
        "replay_on_join": False,
        "snapshot_path": str(tmp_path / f"{name}.snapshot"),
        "leave_on_terminate": True,
        "skip_leave_on_interrupt": False,
        "reconnect_interval": "30s",
        "reconnect_timeout": "24h",
        "tombstone_timeout": "24h",
        "disable_name_resolution": False,
        "enable_syslog": False,
        "syslog_facility": "LOCAL0",
        "retry_join": [f"localhost:{bind_port}"],
        "retry_max_attempts": 3,
        "retry_interval": "10s",
        "rejoin_after_leave": True,
        "enable_compression": True,
        "statsite_addr": "127.0.0.1:8125",
        "statsd_addr": "127.0.0.1:8125",
        "query_response_size_limit": 1024,
        "query_size_limit": 1024,
        "user_event_size_limit": 512,
        "broadcast_timeout": "5s",
    }


def serf_config_files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The config above and its variant with the keys it cannot hold at once: the tags in a
    tags file and the key in a keyring file."""
    bind_port, rpc_port = free_port(), free_port()
    full = serf_config(tmp_path, name, bind_port, rpc_port)
    variant = dict(full, node_name=f"{name}-v", bind=f"127.0.0.1:{free_port()}")
    variant.update(rpc_addr=f"127.0.0.1:{free_port()}")
    for key in ("tags", "role", "encrypt_key", "start_join", "retry_join", "advertise"):
        del variant[key]
    (tmp_path / "tags.json").write_text(json.dumps({"dc": "west"}))
    (tmp_path / "keyring.json").write_text(json.dumps([K32]))
    variant.update(
        tags_file=str(tmp_path / "tags.json"),
        keyring_file=str(tmp_path / "keyring.json"),
        snapshot_path=str(tmp_path / f"{name}-v.snapshot"),
    )
    assert set(full) | set(variant) == SERF_094_KEYS  # every documented key, once or twice
    return write(tmp_path / f"{name}.json", full), write(tmp_path / f"{name}-v.json", variant)


def test_a_serf_config_loads_with_warnings_only_for_the_ignored_keys(tmp_path: Path) -> None:
    full, variant = serf_config_files(tmp_path, "web-1")
    loaded = load([f"-config-file={full}"])
    cfg = loaded.config
    assert cfg.node_name == "web-1" and cfg.tags == {"dc": "east", "rack": "r1", "role": "web"}
    assert cfg.interface == "lo" and cfg.advertise is not None
    assert cfg.advertise.host == "localhost"  # resolved when the agent starts
    assert cfg.retry_max == 3 and cfg.retry_interval == 10.0 and cfg.leave_on_terminate
    assert loaded.keys == (bytes(range(32)),)
    assert {(n.key, n.event) for n in loaded.notices} == {("role", "config_key_deprecated")}
    assert cfg.discover == "web-cluster"
    loaded = load([f"-config-file={variant}"])
    assert loaded.keys == (bytes(range(32)),) and loaded.config.tags_file is not None
    assert loaded.notices == ()


def serf_trio_script() -> list[str]:
    script = Path(sys.executable).parent / "serf-trio"
    return [str(script)] if script.exists() else [sys.executable, "-m", "serf_trio.cli"]


def rpc_member_tags(addr: str, name: str) -> dict[str, str] | None:
    with RpcClient(addr=addr, auth="s3cret", timeout=2.0) as client:
        for m in client.members():
            if m.name == name and m.status == "alive":
                return dict(m.tags)
    return None


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the config has leave_on_terminate: a graceful leave) and the exit status."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=WAIT)
        raise


@pytest.mark.realnet
@pytest.mark.slow
def test_a_serf_config_starts_serf_trio_unchanged(tmp_path: Path) -> None:
    full, _ = serf_config_files(tmp_path, "trio-1")
    doc = json.loads(full.read_text())
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))  # its default RPC socket: in tmp
    env.pop("NOTIFY_SOCKET", None)
    err = tmp_path / "agent.err"
    with err.open("wb") as e:
        proc = subprocess.Popen(
            [*serf_trio_script(), "agent", f"-config-file={full}"],
            stdout=subprocess.DEVNULL,
            stderr=e,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        wait_for(lambda: b'"agent_ready"' in err.read_bytes(), "agent_ready", WAIT)
        tags = wait_for(
            lambda: rpc_member_tags(doc["rpc_addr"], "trio-1"),
            "RPC members",
            WAIT,
            ignore=(OSError, ConnectError),
        )
        assert tags == {"dc": "east", "rack": "r1", "role": "web"}
        wait_for(lambda: b'"start_join_done"' in err.read_bytes(), "the start join", WAIT)
    finally:
        code = stop(proc) if proc.poll() is None else proc.returncode
    records = [json.loads(line) for line in err.read_text().splitlines()]
    warned = [(r["event"], r["key"]) for r in records if r["event"].startswith("config_key_")]
    assert sorted(warned) == [("config_key_deprecated", "role")]
    assert all(r["hint"] for r in records if r["event"].startswith("config_key_"))
    assert code == 0, err.read_text()[-3000:]


@pytest.mark.interop
@pytest.mark.realnet
@pytest.mark.slow
@pytest.mark.skipif(not Path(SERF).exists(), reason="needs the serf binary")
def test_the_same_config_starts_hashicorp_serf(tmp_path: Path) -> None:
    """The test config really is Serf's format: real ``serf agent`` starts with both files."""
    for path in serf_config_files(tmp_path, "serf-1"):
        doc = json.loads(path.read_text())
        out = tmp_path / f"{doc['node_name']}.out"
        with out.open("wb") as o:
            proc = subprocess.Popen(
                [SERF, "agent", f"-config-file={path}"],
                stdout=o,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            tags = wait_for(
                lambda doc=doc: rpc_member_tags(doc["rpc_addr"], doc["node_name"]),  # type: ignore[misc]
                f"serf agent {doc['node_name']} answering RPC",
                WAIT,
                ignore=(OSError, ConnectError),
            )
        finally:
            code = stop(proc) if proc.poll() is None else proc.returncode
        expected = {"dc": "east", "rack": "r1", "role": "web"} if "tags" in doc else {"dc": "west"}
        assert tags == expected, out.read_text()[-3000:]
        assert code == 0, out.read_text()[-3000:]
