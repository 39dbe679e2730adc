"""Every client command against a fake RPC client: output shapes, RPC calls, error exits."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from serf_trio.cli import app
from serf_trio.rpc.api import KeyResponse, QueryParams, QueryRecord
from serf_trio.serf.coordinate import Coordinate

from .conftest import FakeClient, member

SOCK = ["--rpc-socket", "/tmp/test-agent.sock"]


def run(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- members ---------------------------------------------------------------------------------


def test_members_text_is_aligned_like_serf(runner: CliRunner, fake: FakeClient) -> None:
    code, out, err = run(runner, "members", *SOCK)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "n1     127.0.0.11:7946  alive   role=lb,dc=lab",
        "web-2  127.0.0.12:7947  failed  role=web",
        "n3     127.0.0.13:7948  left",
    ]
    assert fake.calls == [("members", ())]
    assert fake.closed == 1


def test_members_detailed_adds_protocol_columns(runner: CliRunner, fake: FakeClient) -> None:
    fake.members_list = [member("n1", bytes([10, 0, 0, 1]), 7946, role="lb")]
    code, out, _ = run(runner, "members", "--detailed", *SOCK)
    assert code == 0
    assert out == (
        "n1  10.0.0.1:7946  alive  role=lb  Protocol Version: 5  Available Protocol Range: [2, 5]\n"
    )


def test_members_json_has_serfs_shape(runner: CliRunner, fake: FakeClient) -> None:
    code, out, _ = run(runner, "members", "--format", "json", *SOCK)
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["members"]
    first = doc["members"][0]
    assert list(first) == ["name", "addr", "port", "tags", "status", "protocol"]
    assert first == {
        "name": "n1",
        "addr": "127.0.0.11:7946",
        "port": 7946,
        "tags": {"dc": "lab", "role": "lb"},
        "status": "alive",
        "protocol": {"max": 5, "min": 2, "version": 5},
    }
    assert [m["status"] for m in doc["members"]] == ["alive", "failed", "left"]


def test_members_json_empty_is_a_list(runner: CliRunner, fake: FakeClient) -> None:
    fake.members_list = []
    code, out, _ = run(runner, "members", "--format", "json", *SOCK)
    assert (code, json.loads(out)) == (0, {"members": []})


def test_members_ipv6_address_in_brackets(runner: CliRunner, fake: FakeClient) -> None:
    fake.members_list = [member("v6", bytes(15) + b"\x01", 7946)]
    code, out, _ = run(runner, "members", "--format", "json", *SOCK)
    assert code == 0
    assert json.loads(out)["members"][0]["addr"] == "[::1]:7946"


def test_members_filters_go_to_members_filtered(runner: CliRunner, fake: FakeClient) -> None:
    code, _, _ = run(
        runner, "members", "--status", "alive|failed", "--name", "n.*",
        "--tag", "role=web|lb", "--tag", "dc=lab", *SOCK,
    )  # fmt: skip
    assert code == 0
    assert fake.calls == [
        ("members_filtered", ("n.*", "alive|failed", {"role": "web|lb", "dc": "lab"}))
    ]


@pytest.mark.parametrize(
    "args",
    [["--name", "b["], ["--status", "("], ["--tag", "role=*x"], ["--tag", "novalue"]],
)
def test_members_bad_filter_is_one_line_before_connecting(
    runner: CliRunner, fake: FakeClient, args: list[str]
) -> None:
    code, out, err = run(runner, "members", *args, *SOCK)
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("Error: invalid")
    assert fake.opened == []


def test_members_rpc_error_prints_the_agents_text(runner: CliRunner, fake: FakeClient) -> None:
    fake.errors["members"] = "Authentication required"
    code, out, err = run(runner, "members", *SOCK)
    assert (code, out) == (1, "")
    assert err == "Error retrieving members: Authentication required\n"
    assert fake.closed == 1


# -- join / leave / force-leave ------------------------------------------------------------


def test_join(runner: CliRunner, fake: FakeClient) -> None:
    code, out, _ = run(runner, "join", "127.0.0.1:7946", "n2/127.0.0.2", "--replay", *SOCK)
    assert code == 0
    assert out == "Successfully joined cluster by contacting 2 nodes.\n"
    assert fake.calls == [("join", (["127.0.0.1:7946", "n2/127.0.0.2"], True))]


def test_join_failure(runner: CliRunner, fake: FakeClient) -> None:
    fake.errors["join"] = "1 error occurred:\n\t* Failed to join 127.0.0.9\n\n"
    code, out, err = run(runner, "join", "127.0.0.9", *SOCK)
    assert (code, out) == (1, "")
    assert err == "Error joining the cluster: 1 error occurred:\n\t* Failed to join 127.0.0.9\n"


def test_join_needs_an_address(runner: CliRunner, fake: FakeClient) -> None:
    code, _, _ = run(runner, "join", *SOCK)
    assert code == 2
    assert fake.calls == []


def test_leave(runner: CliRunner, fake: FakeClient) -> None:
    code, out, _ = run(runner, "leave", *SOCK)
    assert (code, out) == (0, "Graceful leave complete\n")
    assert fake.calls == [("leave", ())]


def test_force_leave_prints_nothing(runner: CliRunner, fake: FakeClient) -> None:
    code, out, _ = run(runner, "force-leave", "web-2", "--prune", *SOCK)
    assert (code, out) == (0, "")
    assert fake.calls == [("force_leave", ("web-2", True))]


# -- event / query --------------------------------------------------------------------------


def test_event(runner: CliRunner, fake: FakeClient) -> None:
    code, out, _ = run(runner, "event", "deploy", "v1.2.3", *SOCK)
    assert (code, out) == (0, "Event 'deploy' dispatched! Coalescing enabled: true\n")
    code, out, _ = run(runner, "event", "--no-coalesce", "deploy", *SOCK)
    assert out == "Event 'deploy' dispatched! Coalescing enabled: false\n"
    assert fake.calls == [("event", ("deploy", b"v1.2.3", True)), ("event", ("deploy", b"", False))]


def test_event_error(runner: CliRunner, fake: FakeClient) -> None:
    fake.errors["event"] = "user event exceeds configured limit of 512 bytes before encoding"
    code, _, err = run(runner, "event", "big", "x" * 600, *SOCK)
    assert code == 1
    assert err == (
        "Error sending event: user event exceeds configured limit of 512 bytes before encoding\n"
    )


QUERY_RECORDS = [
    QueryRecord("ack", "n1"),
    QueryRecord("ack", "n2"),
    QueryRecord("response", "n2", b"pong\n"),
    QueryRecord("response", "n1", b"\xffbad"),
    QueryRecord("done"),
]


def test_query_text_like_serf(runner: CliRunner, fake: FakeClient) -> None:
    fake.query_records = QUERY_RECORDS
    code, out, _ = run(runner, "query", "ping", "hello", *SOCK)
    assert code == 0
    assert out.splitlines() == [
        "Query 'ping' dispatched",
        "Ack from 'n1'",
        "Ack from 'n2'",
        "Response from 'n2': pong",
        "Response from 'n1': \ufffdbad",
        "Total Acks: 2",
        "Total Responses: 2",
    ]


def test_query_json_like_serf(runner: CliRunner, fake: FakeClient) -> None:
    fake.query_records = QUERY_RECORDS
    code, out, _ = run(runner, "query", "ping", "--format", "json", *SOCK)
    assert code == 0
    assert json.loads(out) == {
        "Acks": ["n1", "n2"],
        "Responses": {"n2": "pong\n", "n1": "\ufffdbad"},
    }


def test_query_parameters_reach_the_client(runner: CliRunner, fake: FakeClient) -> None:
    fake.query_records = [QueryRecord("done")]
    code, out, _ = run(
        runner, "query", "load", "p", "--node", "a", "--node", "b", "--tag", "role=web.*",
        "--no-ack", "--relay-factor", "2", "--timeout", "1m30s", *SOCK,
    )  # fmt: skip
    assert code == 0
    assert out.splitlines() == ["Query 'load' dispatched", "Total Responses: 0"]
    (method, (params,)) = fake.calls[0]
    assert method == "query"
    assert params == QueryParams(
        name="load",
        payload=b"p",
        filter_nodes=("a", "b"),
        filter_tags={"role": "web.*"},
        request_ack=False,
        relay_factor=2,
        timeout=90.0,
    )
    # The socket may wait for the whole query, plus a grace period.
    assert fake.opened[0][1] >= 90.0


def test_query_default_timeout_is_the_agents(runner: CliRunner, fake: FakeClient) -> None:
    fake.query_records = [QueryRecord("done")]
    run(runner, "query", "x", *SOCK)
    assert fake.calls[0][1][0].timeout == 0.0
    assert fake.calls[0][1][0].request_ack is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "5"], "Error: invalid duration '5'"),
        (["--timeout", "-1s"], "Error: negative timeout '-1s'"),
        (["--relay-factor", "6"], "Error: --relay-factor must be between 0 and 5"),
    ],
)
def test_query_bad_options(
    runner: CliRunner, fake: FakeClient, args: list[str], message: str
) -> None:
    code, out, err = run(runner, "query", "x", *args, *SOCK)
    assert (code, out) == (1, "")
    assert err.startswith(message) and len(err.splitlines()) == 1
    assert fake.calls == []


def test_query_error(runner: CliRunner, fake: FakeClient) -> None:
    fake.errors["query"] = "Queries cannot contain the '_serf_' prefix"
    code, out, err = run(runner, "query", "_serf_x", *SOCK)
    assert (code, out) == (1, "")
    assert err == "Error sending query: Queries cannot contain the '_serf_' prefix\n"


# -- tags / monitor ---------------------------------------------------------------------------


def test_tags(runner: CliRunner, fake: FakeClient) -> None:
    code, out, _ = run(
        runner, "tags", "--set", "role=web", "--set", "x=a=b", "--delete", "dc", *SOCK
    )
    assert (code, out) == (0, "Successfully updated agent tags\n")
    assert fake.calls == [("tags", ({"role": "web", "x": "a=b"}, ["dc"]))]


def test_tags_needs_a_change(runner: CliRunner, fake: FakeClient) -> None:
    code, _, err = run(runner, "tags", *SOCK)
    assert code == 1
    assert err == "Error: at least one of --set or --delete is required\n"


def test_tags_error(runner: CliRunner, fake: FakeClient) -> None:
    fake.errors["tags"] = "Encoded length of tags exceeds limit of 512 bytes"
    code, _, err = run(runner, "tags", "--set", "k=" + "v" * 600, *SOCK)
    assert code == 1
    assert err == "Error setting tags: Encoded length of tags exceeds limit of 512 bytes\n"


def test_monitor_prints_lines_and_upper_cases_the_level(
    runner: CliRunner, fake: FakeClient
) -> None:
    fake.log_lines = ["2026/11/29 04:50:54 [INFO] agent: starting", "line 2"]
    code, out, _ = run(runner, "monitor", "--log-level", "debug", *SOCK)
    assert (code, out) == (0, "2026/11/29 04:50:54 [INFO] agent: starting\nline 2\n")
    assert fake.calls == [("monitor", ("DEBUG",))]


def test_monitor_bad_level(runner: CliRunner, fake: FakeClient) -> None:
    fake.errors["monitor"] = "Unknown log level: BOGUS"
    code, _, err = run(runner, "monitor", "--log-level", "bogus", *SOCK)
    assert (code, err) == (1, "Error starting monitor: Unknown log level: BOGUS\n")


# -- info / rtt / reachability ------------------------------------------------------------------

STATS = {
    "serf": {"members": "3", "encrypted": "false"},
    "agent": {"name": "n1"},
    "tags": {"role": "lb"},
    "event_handlers": {},
}


def test_info_text_and_json(runner: CliRunner, fake: FakeClient) -> None:
    fake.stats_body = STATS
    code, out, _ = run(runner, "info", *SOCK)
    assert code == 0
    assert out == (
        "agent:\n\tname = n1\nevent_handlers:\nserf:\n\tencrypted = false\n\tmembers = 3\n"
        "tags:\n\trole = lb\n"
    )
    code, out, _ = run(runner, "info", "--format", "json", *SOCK)
    assert json.loads(out) == STATS
    assert list(json.loads(out)) == ["agent", "event_handlers", "serf", "tags"]


def coord(*vec: float, height: float = 0.0, adjustment: float = 0.0) -> Coordinate:
    return Coordinate(vec=vec, error=1.5, adjustment=adjustment, height=height)


def test_rtt_between_two_nodes(runner: CliRunner, fake: FakeClient) -> None:
    fake.coords = {"a": coord(0.003, 0.0, height=0.0001), "b": coord(0.0, 0.004, height=0.0001)}
    code, out, _ = run(runner, "rtt", "a", "b", *SOCK)
    assert (code, out) == (0, "Estimated a <-> b rtt: 5.200 ms\n")


def test_rtt_defaults_to_the_agents_node(runner: CliRunner, fake: FakeClient) -> None:
    fake.stats_body = STATS
    fake.coords = {"a": coord(0.001, 0.0), "n1": coord(0.0, 0.0)}
    code, out, _ = run(runner, "rtt", "a", *SOCK)
    assert (code, out) == (0, "Estimated a <-> n1 rtt: 1.000 ms\n")


def test_rtt_unknown_node(runner: CliRunner, fake: FakeClient) -> None:
    fake.coords = {"a": coord(0.0)}
    code, out, err = run(runner, "rtt", "a", "nope", *SOCK)
    assert (code, out, err) == (1, "", 'Could not find a coordinate for node "nope"\n')
    assert fake.closed == 1


def test_reachability_all_live_nodes_ack(runner: CliRunner, fake: FakeClient) -> None:
    fake.query_records = [QueryRecord("ack", "n1"), QueryRecord("done")]
    code, out, _ = run(runner, "reachability", *SOCK)
    assert code == 0
    assert out.splitlines() == [
        "Total members: 3, live members: 1",
        "Starting reachability test...",
        "Successfully contacted all live nodes",
    ]
    params = fake.calls[1][1][0]
    assert (params.name, params.request_ack, params.payload) == ("_serf_ping", True, b"")


def test_reachability_missing_ack_fails(runner: CliRunner, fake: FakeClient) -> None:
    fake.query_records = [QueryRecord("ack", "n3"), QueryRecord("done")]
    code, out, _ = run(runner, "reachability", "--verbose", *SOCK)
    assert code == 1
    lines = out.splitlines()
    assert "\tAck from 'n3'" in lines
    assert lines[lines.index("Missing acks from:") + 1] == "\tn1"
    assert lines[lines.index("Received acks from nodes that are not live:") + 1] == "\tn3"


# -- keygen / keys ------------------------------------------------------------------------------


def test_keygen_is_32_random_bytes(runner: CliRunner) -> None:
    import base64

    keys = {run(runner, "keygen")[1].strip() for _ in range(3)}
    assert len(keys) == 3
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)


UNENCRYPTED = KeyResponse(
    keys={},
    messages={
        "n2": "Keyring is empty (encryption not enabled)",
        "n1": "Keyring is empty (encryption not enabled)",
    },
    num_nodes=2,
    num_resp=2,
    num_err=2,
    error="2/2 nodes reported failure",
)


def test_keys_list_on_an_unencrypted_cluster(runner: CliRunner, fake: FakeClient) -> None:
    fake.key_response = UNENCRYPTED
    code, out, err = run(runner, "keys", "--list", *SOCK)
    assert code == 1
    assert out == (
        "==> Asking all members for installed keys...\n"
        "failed:  n1  Keyring is empty (encryption not enabled)\n"
        "failed:  n2  Keyring is empty (encryption not enabled)\n\n"
    )
    assert err == "Failed to gather member keys: 2/2 nodes reported failure\n"


def test_keys_list_success(runner: CliRunner, fake: FakeClient) -> None:
    fake.key_response = KeyResponse(
        keys={"QUFB": 2, "QkJC": 1}, messages={}, num_nodes=2, num_resp=2, num_err=0
    )
    code, out, _ = run(runner, "keys", "--list", *SOCK)
    assert code == 0
    assert out.splitlines()[-2:] == [
        "QUFB  installed on 2 of 2 members",
        "QkJC  installed on 1 of 2 members",
    ]


@pytest.mark.parametrize(
    ("flag", "method", "done"),
    [
        ("--install", "install_key", "Successfully installed key!"),
        ("--use", "use_key", "Successfully changed primary key!"),
        ("--remove", "remove_key", "Successfully removed key!"),
    ],
)
def test_key_operations(
    runner: CliRunner, fake: FakeClient, flag: str, method: str, done: str
) -> None:
    fake.key_response = KeyResponse(keys=None, messages={}, num_nodes=1, num_resp=1, num_err=0)
    code, out, _ = run(runner, "keys", flag, "S0VZ", *SOCK)
    assert code == 0
    assert out.splitlines()[-1] == done
    # --remove lists first (its safety check); with no keyring anywhere it goes ahead.
    listed = [("list_keys", ())] if flag == "--remove" else []
    assert fake.calls == [*listed, (method, ("S0VZ",))]


def test_keys_remove_refuses_when_no_other_key_is_everywhere(
    runner: CliRunner, fake: FakeClient
) -> None:
    fake.key_response = KeyResponse(
        keys={"QUFB": 3, "QkJC": 2}, messages={}, num_nodes=3, num_resp=3, num_err=0
    )
    code, out, err = run(runner, "keys", "--remove", "QUFB", *SOCK)
    assert code == 1
    assert "Refusing to remove QUFB" in out
    assert "QkJC  installed on 2 of 3 members" in out
    assert err == "Error removing key: QUFB may still be needed by some members\n"
    assert fake.calls == [("list_keys", ())]
    # Another key everywhere: allowed.
    fake.calls.clear()
    code, out, _ = run(runner, "keys", "--remove", "QkJC", *SOCK)
    assert code == 0 and fake.calls == [("list_keys", ()), ("remove_key", ("QkJC",))]
    # --force skips the check.
    fake.calls.clear()
    code, out, _ = run(runner, "keys", "--remove", "QUFB", "--force", *SOCK)
    assert code == 0 and fake.calls == [("remove_key", ("QUFB",))]


def test_keys_remove_refuses_when_a_member_did_not_answer(
    runner: CliRunner, fake: FakeClient
) -> None:
    fake.key_response = KeyResponse(
        keys={"QUFB": 2, "QkJC": 2}, messages={}, num_nodes=3, num_resp=2, num_err=0,
        error="2/3 nodes reported success",
    )
    code, out, _ = run(runner, "keys", "--remove", "QUFB", *SOCK)
    assert code == 1
    assert "Only 2 of 3 members listed their keys." in out


def test_keys_needs_exactly_one_operation(runner: CliRunner, fake: FakeClient) -> None:
    for args in ([], ["--list", "--use", "K"]):
        code, _, err = run(runner, "keys", *args, *SOCK)
        assert code == 1
        assert err == "Error: give exactly one of --install, --use, --remove or --list\n"
    assert fake.calls == []


# -- no agent, agent ----------------------------------------------------------------------------

CLIENT_COMMANDS = [
    ["members"],
    ["join", "127.0.0.1"],
    ["leave"],
    ["force-leave", "x"],
    ["event", "e"],
    ["query", "q"],
    ["tags", "--set", "a=b"],
    ["monitor"],
    ["info"],
    ["rtt", "a"],
    ["reachability"],
    ["keys", "--list"],
]


@pytest.mark.parametrize("args", CLIENT_COMMANDS, ids=lambda a: a[0])
def test_no_agent_is_one_line_and_exit_1(
    runner: CliRunner, unreachable: None, args: list[str]
) -> None:
    code, out, err = run(runner, *args, *SOCK)
    assert (code, out) == (1, "")
    assert err == (
        "Error connecting to serf-trio agent at /tmp/test-agent.sock: No such file or directory\n"
    )


def test_agent_passes_arguments_through_unparsed(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serf_trio.agent

    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    monkeypatch.setattr(serf_trio.agent, "main", fake_main, raising=False)
    code, _, _ = run(runner, "agent", "--node", "a", "--help", "-x", "--tag", "k=v")
    assert code == 3
    assert seen == [["--node", "a", "--help", "-x", "--tag", "k=v"]]


def test_version(runner: CliRunner) -> None:
    code, out, _ = run(runner, "version")
    assert code == 0
    assert out.startswith("serf-trio v")
