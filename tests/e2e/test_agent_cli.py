"""Issue 3 end to end: ``serf-trio agent`` processes driven by the ``serf-trio`` CLI, the real
``serf`` CLI and the PyPI ``serfclient`` over serf-trio's RPC."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from .conftest import HOST, Cluster, handler_script, need_serf, wait_for

pytestmark = [pytest.mark.realnet, pytest.mark.timeout(90)]


@pytest.mark.slow
def test_three_agents_join_list_and_leave(cluster: Cluster) -> None:
    n1 = cluster.trio("n1", "--tag", "role=lb", "--tag", "dc=lab")
    n2 = cluster.trio("n2")
    n3 = cluster.trio("n3", "--tag", "role=web")

    for a in (n2, n3):
        proc = a.cli("join", n1.addr)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            0,
            "Successfully joined cluster by contacting 1 nodes.\n",
            "",
        )
    agents = [n1, n2, n3]
    cluster.all_alive(agents)

    proc = n2.cli("members", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc) == ["members"]
    rows = {m["name"]: m for m in doc["members"]}
    assert set(rows) == {"n1", "n2", "n3"}
    for a in agents:
        row = rows[a.name]
        assert set(row) == {"name", "addr", "port", "tags", "status", "protocol"}
        assert row["addr"] == f"{HOST}:{a.port}" and row["port"] == a.port
        assert row["status"] == "alive"
        proto = row["protocol"]
        assert set(proto) == {"min", "max", "version"}
        assert all(isinstance(v, int) for v in proto.values())
        assert proto["min"] <= proto["version"] <= proto["max"]
    assert rows["n1"]["tags"] == {"role": "lb", "dc": "lab"}
    assert rows["n3"]["tags"] == {"role": "web"}
    assert rows["n2"]["tags"] == {}

    proc = n3.cli("leave")
    assert (proc.returncode, proc.stdout) == (0, "Graceful leave complete\n"), proc.stderr
    assert n3.proc.wait(timeout=20) == 0  # the agent stops after its leave
    cluster.converge([n1, n2], n3="left")
    proc = n1.cli("members", "--status", "left")
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["n3"]

    # With no TTY the agent writes nothing but JSON lines, on stdout and stderr alike.
    for a in agents:
        recs = a.json_logs()
        assert recs, f"{a.name} logged nothing"
        assert all("event" in r and "level" in r for r in recs)
    assert any(r["event"] == "agent_stopped" for r in n3.json_logs())


@pytest.mark.interop
def test_real_serf_cli_against_serf_trio_tcp_rpc(cluster: Cluster) -> None:
    need_serf()
    t1 = cluster.trio("t1", "--tag", "role=api", rpc_addr=True)
    t2 = cluster.trio("t2")

    proc = t1.serf_cli("members")
    assert proc.returncode == 0, proc.stderr
    fields = proc.stdout.split()
    assert fields[:3] == ["t1", t1.addr, "alive"] and "role=api" in proc.stdout

    # `serf monitor` (bounded): it replays buffered lines and streams new ones.
    mon_out = cluster.dir / "monitor.out"
    with mon_out.open("wb") as out:
        monitor = subprocess.Popen(
            [need_serf(), "monitor", f"-rpc-addr={t1.rpc_addr}", "-log-level=debug"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        proc = t1.serf_cli("join", t2.addr)
        assert (proc.returncode, proc.stdout.strip()) == (
            0,
            "Successfully joined cluster by contacting 1 nodes.",
        ), proc.stderr
        cluster.all_alive([t1, t2])
        # serf monitor prints each log line it receives; the join must show up.
        wait_for(lambda: "t2" in mon_out.read_text(errors="replace"), "monitor to show t2")
        assert monitor.poll() is None, mon_out.read_text()  # still streaming
    finally:
        monitor.kill()
        monitor.wait(timeout=10)

    proc = t1.serf_cli("members", "-format=json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    got = {m["name"]: (m["addr"], m["status"]) for m in doc["members"]}
    assert got == {"t1": (t1.addr, "alive"), "t2": (t2.addr, "alive")}

    proc = t1.serf_cli("leave")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Graceful leave complete" in proc.stdout
    assert t1.proc.wait(timeout=20) == 0
    cluster.converge([t2], t1="left")


@pytest.mark.interop
def test_serfclient_members_and_event(cluster: Cluster) -> None:
    serfclient = pytest.importorskip("serfclient")
    t1 = cluster.trio("t1", "--tag", "role=db", rpc_addr=True)
    assert t1.rpc_addr is not None
    host, port = t1.rpc_addr.rsplit(":", 1)
    client = serfclient.SerfClient(host=host, port=int(port), timeout=5)
    try:
        result = client.members()
        body = _text_keys(result.body)
        members = body["Members"]
        assert isinstance(members, list) and len(members) == 1
        me = members[0]
        assert me["Name"] == "t1" and me["Status"] == "alive" and me["Port"] == t1.port
        addr = me["Addr"]
        assert (addr.encode() if isinstance(addr, str) else bytes(addr)) == b"\x7f\x00\x00\x01"
        assert me["Tags"] == {"role": "db"}

        result = client.event("sc-deploy", "v42", coalesce=False)
        assert _text_keys(result.head)["Error"] == ""
    finally:
        client.close()
    lines = wait_for(lambda: t1.user_events("sc-deploy"), "t1 handler to run sc-deploy")
    # the handler gets the payload plus a newline (RPC.md 7): 4 bytes
    assert lines[0][4].endswith(":4")


def _text_keys(obj: object) -> dict[str, object]:
    """serfclient may hand back bytes keys/values (older msgpack defaults): normalise."""
    if isinstance(obj, dict):
        return {(k.decode() if isinstance(k, bytes) else k): _text_value(v) for k, v in obj.items()}
    raise AssertionError(f"expected a map, got {obj!r}")


def _text_value(v: object) -> object:
    if isinstance(v, dict):
        return _text_keys(v)
    if isinstance(v, list):
        return [_text_value(x) for x in v]
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return v
    return v


def test_sighup_swaps_the_handlers_that_run(cluster: Cluster) -> None:
    script = handler_script(cluster.dir)
    events = cluster.dir / "n1.events"
    conf = cluster.dir / "n1.json"
    conf.write_text(json.dumps({"event_handlers": [f"user:before=sh {script} {events}"]}))
    n1 = cluster.trio("n1", f"--config-file={conf}", handlers=[])
    assert n1.cli("event", "--no-coalesce", "before").returncode == 0
    wait_for(lambda: n1.user_events("before"), "the first handler")

    conf.write_text(json.dumps({"event_handlers": [f"user:after=sh {script} {events}"]}))
    n1.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: n1.logs_with("config_reloaded"), "the reload")
    for name in ("before", "after"):
        assert n1.cli("event", "--no-coalesce", name).returncode == 0

    def logged(event: str, name: str) -> int:
        return sum(1 for r in n1.logs_with(event) if r.get("name") == name)

    # The agent delivered the second "before" (debug line ``user_event``) ahead of "after", and
    # the new handler's run of "after" is over: a handler still subscribed to "before" was
    # handed it first and would have started it (``handler_started``) by now.
    wait_for(lambda: logged("user_event", "before") == 2, "the second before delivered")
    wait_for(lambda: logged("handler_exited", "after"), "the new handler's run")
    assert n1.user_events("after")
    assert logged("handler_started", "before") == 1  # the run before the reload only
    assert len(n1.user_events("before")) == 1
    assert n1.alive() and n1.sees(n1="alive")  # reloaded without leaving
