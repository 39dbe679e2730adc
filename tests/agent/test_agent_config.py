"""Agent configuration: files, config dir, flags, Serf's merge rules and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serf_trio.agent.config import (
    KEY_AND_KEYRING,
    ConfigError,
    load,
    parse_duration,
    parse_event_filter,
    parse_handler,
    parse_join_address,
)
from serf_trio.runtime.resolve import HostPort


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("24h", 86400.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("0", 0.0),
        (7, 7.0),
        (0.25, 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "5x", "s", "-1s", "1m30", True, -3, None, [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_defaults_and_hostname() -> None:
    cfg = load([], hostname="box-7").config
    assert cfg.node_name == "box-7"
    assert cfg.bind == HostPort("0.0.0.0", 7946)
    assert cfg.rpc_addr is None  # TCP RPC off unless given
    assert cfg.log_level == "INFO"
    assert (cfg.retry_interval, cfg.reconnect_timeout, cfg.tombstone_timeout) == (
        30.0,
        86400.0,
        86400.0,
    )
    assert (cfg.user_event_size_limit, cfg.query_size_limit) == (512, 1024)


def test_flags() -> None:
    cfg = load(
        [
            "--node=n1",
            "--bind=127.0.0.1",
            "--advertise=10.0.0.1",
            "--join=127.0.0.2",
            "--join=n3/127.0.0.3:8000",
            "--retry-join=127.0.0.4:7000",
            "--rpc-addr=127.0.0.1",
            "--rpc-socket=/tmp/x.sock",
            "--rpc-auth=tok",
            "--event-handler=member-join,user:deploy=./h.sh a=b",
            "--event-handler=./all.sh",
            "--tag=role=web",
            "--tag=dc=x=y",
            "--profile=local",
            "--log-level=Warning",
            "--log-format=text",
        ]
    ).config
    assert cfg.node_name == "n1"
    assert cfg.bind == HostPort("127.0.0.1", 7946)
    assert cfg.advertise == HostPort("10.0.0.1", 0)  # 0 = the bound port
    assert cfg.rpc_addr == HostPort("127.0.0.1", 7373)
    assert cfg.start_join == ("127.0.0.2", "n3/127.0.0.3:8000")  # kept as written
    assert parse_join_address(cfg.start_join[1]) == HostPort("127.0.0.3", 8000)
    assert cfg.retry_join == ("127.0.0.4:7000",)
    assert cfg.tags == {"role": "web", "dc": "x=y"}
    assert [h.command for h in cfg.event_handlers] == ["./h.sh a=b", "./all.sh"]
    assert cfg.event_handlers[0].filter.matches("user", "deploy")
    assert not cfg.event_handlers[0].filter.matches("user", "other")
    assert cfg.event_handlers[1].filter.matches("member-reap")
    assert (cfg.profile, cfg.log_level, cfg.log_format) == ("local", "WARN", "text")


@pytest.mark.parametrize(
    ("word", "level"),
    [("trace", "TRACE"), ("DEBUG", "DEBUG"), ("warn", "WARN"), ("err", "ERR"), ("Error", "ERR")],
)
def test_log_levels_any_case(word: str, level: str) -> None:
    assert load([f"--log-level={word}"], hostname="h").config.log_level == level


def test_files_dir_merge_and_flag_override(tmp_path: Path) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    write(
        d / "10-base.json",
        {
            "node_name": "a",
            "tags": {"role": "web", "dc": "1"},
            "start_join": ["127.0.0.2"],
            "retry_interval": "5s",
        },
    )
    (d / "20-more.toml").write_text(
        'node_name = "b"\nstart_join = ["127.0.0.3"]\nretry_interval = 2\n[tags]\ndc = "2"\n'
    )
    (d / "30-ignored.txt").write_text("not config")
    cfg = load(["--config-dir", str(d), "--join=127.0.0.4", "--tag=extra=1"]).config
    assert cfg.node_name == "b"  # later file wins
    assert cfg.tags == {"role": "web", "dc": "2", "extra": "1"}  # tags merge per key
    assert cfg.start_join == ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # lists append
    assert cfg.retry_interval == 2.0
    cfg2 = load(["--config-dir", str(d), "--node=c"]).config
    assert cfg2.node_name == "c"  # flags override files


def test_config_file_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", {"log_level": "debug"})
    b = write(tmp_path / "b.json", {"log_level": "err"})
    assert load(["--config-file", str(b), "--config-file", str(a)]).config.log_level == "DEBUG"
    assert load(["--config-file", str(a), "--config-file", str(b)]).config.log_level == "ERR"


def one_line_error(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(argv, hostname="h")
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("doc", "key", "fragment"),
    [
        ({"nod_name": "x"}, "nod_name", "unknown"),
        ({"query_timeout_mult": 16}, "query_timeout_mult", "unknown"),  # not a Serf agent key
        ({"bind": 7946}, "bind", "HOST[:PORT]"),
        ({"bind": "bad host!:1"}, "bind", "neither an IP address nor a host name"),
        ({"bind": "127.0.0.1:70000"}, "bind", "out of range"),
        ({"bind": "127.0.0.1:http"}, "bind", "port in '127.0.0.1:http' is not a number"),
        ({"rpc_addr": "[::1]:x"}, "rpc_addr", "not a number"),
        ({"retry_interval": "soon"}, "retry_interval", "is not a duration"),
        ({"retry_interval": "5"}, "retry_interval", '"1m30s"'),
        ({"retry_max": "3"}, "retry_max", "whole number"),
        ({"retry_max_attempts": 1.5}, "retry_max_attempts", "whole number from 0 to"),
        ({"protocol": 9}, "protocol", "between 2 and 5"),
        ({"leave_on_terminate": "yes"}, "leave_on_terminate", "true or false"),
        ({"tags": {"a": 1}}, "tags", "string"),
        ({"tags": {"k": "v" * 600}}, "tags", "512 bytes"),
        ({"start_join": ["host_.exa mple"]}, "start_join", "HOST[:PORT]"),
        ({"retry_join": ["/127.0.0.1"]}, "retry_join", "empty node name"),
        ({"syslog_facility": "LOCAL9"}, "syslog_facility", "LOCAL7"),
        ({"interface": "eth0 "}, "interface", "network interface name"),
        ({"enable_compression": "no"}, "enable_compression", "true or false"),
        ({"mdns": "x"}, "mdns", "map"),
        ({"event_handlers": ["bogus=./x.sh"]}, "event_handlers", "Invalid event script"),
        ({"event_handlers": [" member-join=./x.sh"]}, "event_handlers", "Invalid event script"),
        ({"event_handlers": ["user="]}, "event_handlers", "empty command"),
        ({"profile": "moon"}, "profile", "lan, wan, local"),
        ({"log_level": "loud"}, "log_level", "unknown log level"),
        ({"log_format": "xml"}, "log_format", "json"),
        ({"encrypt_key": "abc"}, "encrypt_key", "illegal base64"),
        ({"encrypt_key": "a2V5"}, "encrypt_key", "16, 24 or 32 bytes"),
        ({"encrypt_algorithm": "rot13"}, "encrypt_algorithm", "secretbox or aes-gcm"),
        ({"encrypt_verify_incoming": "no"}, "encrypt_verify_incoming", "true or false"),
        ({"user_event_size_limit": 10000}, "user_event_size_limit", "between"),
    ],
)
def test_file_errors_name_key_and_file(
    tmp_path: Path, doc: dict[str, object], key: str, fragment: str
) -> None:
    path = write(tmp_path / "bad.json", doc)
    text = one_line_error(["--config-file", str(path)])
    assert str(path) in text
    assert repr(key) in text
    assert fragment in text


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("broken.json", "{not json", "invalid json"),
        ("broken.toml", "a = = 1", "invalid toml"),
        ("list.json", "[1, 2]", "object of keys"),
        ("bin.json", b"\xff\xfe", "invalid json"),
    ],
)
def test_unparseable_files(tmp_path: Path, name: str, content: str | bytes, fragment: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    text = one_line_error(["--config-file", str(path)])
    assert str(path) in text and fragment in text


def test_missing_file_and_dir(tmp_path: Path) -> None:
    text = one_line_error(["--config-file", str(tmp_path / "nope.json")])
    assert "nope.json" in text and "cannot read" in text
    text = one_line_error(["--config-dir", str(tmp_path / "nodir")])
    assert "nodir" in text and "cannot read config dir" in text


def test_bad_file_in_dir_is_named(tmp_path: Path) -> None:
    write(tmp_path / "a.json", {"node_name": "ok"})
    write(tmp_path / "b.json", {"bogus": 1})
    text = one_line_error(["--config-dir", str(tmp_path)])
    assert str(tmp_path / "b.json") in text and "'bogus'" in text


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--encrypt", "a2V5"], "--encrypt"),
        (["--encrypt", "not base64!"], "illegal base64"),
        (["--encrypt-algorithm", "rot13"], "--encrypt-algorithm"),
        (["--encrypt-verify-incoming", "maybe"], "--encrypt-verify-incoming"),
        (["--bind", "no where"], "--bind"),
        (["--syslog=perhaps"], "--syslog"),
        (["--tag", "novalue"], "--tag"),
        (["--event-handler", "member-joyn=./x"], "--event-handler"),
        (["--log-level", "chatty"], "--log-level"),
        (["--profile", "moon"], "--profile"),
        (["--frobnicate"], "unrecognized arguments"),
        (["--retry-max", "x"], "--retry-max: expected a whole number"),
        (["--protocol", "9"], "--protocol: must be between 2 and 5"),
        (["--retry-interval", "9"], "--retry-interval: '9' is not a duration"),
    ],
)
def test_flag_errors(argv: list[str], fragment: str) -> None:
    text = one_line_error(argv)
    assert text.startswith("command line:")
    assert fragment in text


def test_tags_and_tags_file_conflict(tmp_path: Path) -> None:
    text = one_line_error(["--tag=a=b", f"--tags-file={tmp_path / 't.json'}"])
    assert "'tags'" in text and "tags_file" in text


def test_event_filters() -> None:
    # Serf semantics (serf_trio.serf.filters): words are not trimmed; "user:" is every user event
    f = parse_event_filter("member-join,user:deploy,query")
    assert f.matches("member-join") and not f.matches("member-leave")
    assert f.matches("user", "deploy") and not f.matches("user", "x")
    assert f.matches("query", "anything")
    everything = parse_event_filter("")
    assert everything.matches("member-reap") and everything.matches("user", "x")
    assert parse_event_filter("user:").matches("user", "any-name")
    for bad in (" member-join", "members", "member-join,,", "member-join, user"):
        with pytest.raises(ValueError):
            parse_event_filter(bad)


def test_handler_split_at_first_equals() -> None:
    h = parse_handler("user:deploy=./deploy.sh X=1")
    assert (str(h.filter), h.command) == ("user:deploy", "./deploy.sh X=1")
    assert parse_handler("./plain.sh").filter.matches("member-failed")


def test_join_address_forms() -> None:
    assert parse_join_address("127.0.0.1") == HostPort("127.0.0.1", 7946)
    assert parse_join_address("n1/127.0.0.1:9000") == HostPort("127.0.0.1", 9000)
    assert parse_join_address("[::1]:9000") == HostPort("::1", 9000)
    assert parse_join_address("seed.example.com") == HostPort("seed.example.com", 7946)
    assert parse_join_address("n1/localhost:9000") == HostPort("localhost", 9000)


K32 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # bytes 0..31
K16 = "EBESExQVFhcYGRobHB0eHw=="  # bytes 16..31


def test_encryption_settings_load(tmp_path: Path) -> None:
    loaded = load(["--encrypt", K32], hostname="h")
    assert loaded.keys == (bytes(range(32)),)
    cfg = loaded.config
    assert cfg.encrypt_algorithm == "secretbox"
    assert cfg.encrypt_verify_incoming and cfg.encrypt_verify_outgoing
    assert K32 not in repr(loaded)  # key material never shows in a repr
    loaded = load(
        ["--encrypt", K16, "--encrypt-algorithm", "aes-gcm", "--encrypt-verify-incoming=false"],
        hostname="h",
    )
    assert loaded.keys == (bytes(range(16, 32)),)
    assert loaded.config.encrypt_algorithm == "aes-gcm"
    assert loaded.config.encrypt_verify_incoming is False
    assert load([], hostname="h").keys is None


def test_secretbox_needs_a_32_byte_key() -> None:
    text = one_line_error(["--encrypt", K16])
    assert "'encrypt_key'" in text and "16 bytes" in text and "aes-gcm" in text


def test_keyring_file_is_read_primary_first(tmp_path: Path) -> None:
    path = write(tmp_path / "keyring.json", [K32, K16])
    loaded = load(["--keyring-file", str(path)], hostname="h")
    assert loaded.keys == (bytes(range(32)), bytes(range(16, 32)))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read keyring file"),
        ("{nope", "Failed to decode keyring file"),
        ("[]", "Keyring file contains no keys"),
        ('{"a": 1}', "JSON list of base64 keys"),
        (f'["{K32}", "***"]', "key 2: illegal base64"),
        ('["a2V5"]', "key 1 has 3 bytes"),
        (f'["{K16}"]', "secretbox needs 32"),
    ],
)
def test_keyring_file_errors_name_the_file(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "keyring.json"
    if content is not None:
        path.write_text(content)
    text = one_line_error(["--keyring-file", str(path)])
    assert str(path) in text and "keyring_file" in text and fragment in text
    assert "\n" not in text


def test_key_and_keyring_file_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "keyring.json", [K32])
    text = one_line_error(["--keyring-file", str(path), "--encrypt", K32])
    assert KEY_AND_KEYRING in text
