"""Serf's key queries (``serf.internal``): the responder, the list truncation, the originator.

* ``answer_key_query`` applies ``_serf_install-key`` / ``use-key`` / ``remove-key`` /
  ``list-keys`` to an envelope's keyring with Serf's and memberlist's texts, with and without a
  keyring, refuses a malformed request as Serf does (Result false, no message), and refuses
  to make a key a secretbox node cannot send with primary.
* Golden: replaying 06-encrypted's ``serf keys`` session (list, install, use, remove, list)
  gives the requests and every node's responses byte for byte, and ``KeyReport`` aggregates
  the captured responses exactly as the agent reported them over RPC.
* ``fit_key_list`` truncates a key list until it fits, with Serf's message.
* ``KeyReport``: counts, messages, warnings, key and primary key tallies, early completion,
  Serf's error texts, and invalid or undecodable responses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serf_trio.serf.internal import (
    INSTALL_KEY,
    KEY_QUERIES,
    KEY_QUERY_NAMES,
    KEYRING_EMPTY,
    LIST_KEYS,
    NO_KEYRING_TO_MODIFY,
    REMOVE_KEY,
    USE_KEY,
    KeyAnswer,
    KeyReport,
    answer_key_query,
    fit_key_list,
    key_query,
)
from serf_trio.serf.messages import (
    KeyRequest,
    KeyResponse,
    decode_key_request,
    decode_key_response,
    encode_key_request,
    encode_key_response,
)
from serf_trio.serf.query import QueryParam
from serf_trio.wire.crypto import Algorithm, Envelope
from serf_trio.wire.keyring import (
    BAD_KEY_SIZE,
    NOT_IN_KEYRING,
    REMOVE_PRIMARY,
    Keyring,
    encode_key,
)

CAPTURE = Path(__file__).resolve().parent.parent / "data" / "vectors" / "06-encrypted.jsonl"

# The capture's keys (tests/data/vectors/README.md).
K1 = bytes(range(32))
K2 = bytes(range(16, 32))
A = b"\xaa" * 32
B = b"\xbb" * 32
S16 = b"\x16" * 16
AES = Algorithm.AES_GCM
BOX = Algorithm.SECRETBOX


def _envelope(algorithm: Algorithm, *keys: bytes) -> Envelope:
    return Envelope(Keyring(keys), algorithm)


def _request(key: bytes) -> bytes:
    return encode_key_request(KeyRequest(key))


def _ok(message: str = "") -> bytes:
    return encode_key_response(KeyResponse(True, message))


# ---------------------------------------------------------------------------------------------
# The responder


@pytest.mark.parametrize(
    ("algorithm", "start", "name", "key", "result", "message", "after"),
    [
        # install: appended; present already -> success, no change; bad size -> memberlist's text
        (AES, [K1], INSTALL_KEY, K2, True, "", (K1, K2)),
        (AES, [K1, K2], INSTALL_KEY, K2, True, "", (K1, K2)),
        (AES, [K1, K2], INSTALL_KEY, K1, True, "", (K1, K2)),
        (AES, [K1], INSTALL_KEY, bytes(20), False, BAD_KEY_SIZE, (K1,)),
        (AES, [K1], INSTALL_KEY, b"", False, BAD_KEY_SIZE, (K1,)),
        (BOX, [A], INSTALL_KEY, S16, True, "", (A, S16)),  # secretbox may hold it to read
        # use
        (AES, [K1, K2], USE_KEY, K2, True, "", (K2, K1)),
        (AES, [K1, K2], USE_KEY, K1, True, "", (K1, K2)),
        (AES, [K1], USE_KEY, K2, False, NOT_IN_KEYRING, (K1,)),
        (AES, [A, S16], USE_KEY, S16, True, "", (S16, A)),  # aes-gcm sends with 16 bytes
        (BOX, [A, B], USE_KEY, B, True, "", (B, A)),
        (BOX, [A], USE_KEY, S16, False, NOT_IN_KEYRING, (A,)),  # memberlist's text first
        # remove
        (AES, [K1, K2], REMOVE_KEY, K2, True, "", (K1,)),
        (AES, [K2, K1], REMOVE_KEY, K1, True, "", (K2,)),
        (AES, [K1, K2], REMOVE_KEY, K1, False, REMOVE_PRIMARY, (K1, K2)),
        (AES, [K1], REMOVE_KEY, K2, True, "", (K1,)),  # absent: a no-op success
        (BOX, [A, S16], REMOVE_KEY, S16, True, "", (A,)),
    ],
)
def test_key_change_queries(
    algorithm: Algorithm,
    start: list[bytes],
    name: str,
    key: bytes,
    result: bool,
    message: str,
    after: tuple[bytes, ...],
) -> None:
    env = _envelope(algorithm, *start)
    assert env.keyring is not None
    answer = answer_key_query(name, _request(key), env)
    changed = after != tuple(start)
    assert answer == KeyAnswer(KeyResponse(result, message), changed)
    assert env.keyring.keys == after
    assert env.keyring.generation == (1 if changed else 0)


def test_secretbox_refuses_a_16_byte_primary() -> None:
    env = _envelope(BOX, A, S16)
    assert env.keyring is not None
    answer = answer_key_query(USE_KEY, _request(S16), env)
    assert not answer.changed
    assert not answer.response.result
    assert answer.response.message.startswith("secretbox needs a 32-byte primary key")
    assert "16 bytes" in answer.response.message
    assert env.keyring.keys == (A, S16)
    assert env.keyring.generation == 0
    # the node still seals with its 32-byte key
    assert env.open_packet(env.seal_packet(b"x")).key_index == 0


@pytest.mark.parametrize("algorithm", [AES, BOX])
def test_list_keys(algorithm: Algorithm) -> None:
    env = _envelope(algorithm, A, B, S16)
    assert env.keyring is not None
    answer = answer_key_query(LIST_KEYS, b"", env)
    expected = (encode_key(A), encode_key(B), encode_key(S16))
    assert answer == KeyAnswer(KeyResponse(True, "", expected, encode_key(A)), False)
    env.keyring.use(B)
    answer = answer_key_query(LIST_KEYS, _request(b""), env)
    assert answer.response.keys == (encode_key(B), encode_key(A), encode_key(S16))
    assert answer.response.primary_key == encode_key(B)
    # list-keys does not read its payload (serf handleListKeys does not decode it)
    assert answer_key_query(LIST_KEYS, b"\xc1garbage", env).response.result
    assert env.keyring.generation == 1


@pytest.mark.parametrize("holder", [None, Envelope(None), Envelope(None, AES)])
@pytest.mark.parametrize("name", [INSTALL_KEY, USE_KEY, REMOVE_KEY, LIST_KEYS])
def test_without_keyring(holder: Envelope | None, name: str) -> None:
    answer = answer_key_query(name, _request(K1), holder)
    text = KEYRING_EMPTY if name == LIST_KEYS else NO_KEYRING_TO_MODIFY
    assert answer == KeyAnswer(KeyResponse(False, text), False)
    assert answer.response.keys is None
    if holder is not None:
        assert holder.keyring is None


def test_serf_texts_without_keyring() -> None:
    assert NO_KEYRING_TO_MODIFY == "No keyring to modify (encryption not enabled)"
    assert KEYRING_EMPTY == "Keyring is empty (encryption not enabled)"


MALFORMED = [
    b"",
    b"\x07",  # the type byte alone
    b"\x08\x81\xa3Key\xa0",  # a key response's type byte
    b"\x07\x93\x01\x02\x03",  # an array, not a map
    b"\x07\x81\xa3Key\x05",  # Key is not a byte string
    b"\x07\xc1",  # not msgpack
]


@pytest.mark.parametrize("payload", MALFORMED)
@pytest.mark.parametrize("name", [INSTALL_KEY, USE_KEY, REMOVE_KEY])
@pytest.mark.parametrize("with_keyring", [True, False])
def test_malformed_request(payload: bytes, name: str, with_keyring: bool) -> None:
    """Serf decodes the request before anything else: Result false, no message."""
    env = _envelope(AES, K1, K2) if with_keyring else Envelope(None)
    answer = answer_key_query(name, payload, env)
    assert answer == KeyAnswer(KeyResponse(False, ""), False)
    if env.keyring is not None:
        assert env.keyring.keys == (K1, K2)
        assert env.keyring.generation == 0


def test_a_whole_rotation_through_queries() -> None:
    env = _envelope(AES, K1)
    assert env.keyring is not None
    steps = [
        (INSTALL_KEY, K2, True),
        (INSTALL_KEY, K2, False),
        (USE_KEY, K2, True),
        (REMOVE_KEY, K1, True),
        (REMOVE_KEY, K1, False),
    ]
    for name, key, changed in steps:
        answer = answer_key_query(name, _request(key), env)
        assert answer.response.result, name
        assert answer.changed is changed, name
    assert env.keyring.keys == (K2,)
    listed = answer_key_query(LIST_KEYS, b"", env).response
    assert listed.keys == (encode_key(K2),)
    assert listed.primary_key == encode_key(K2)


# ---------------------------------------------------------------------------------------------
# key_query: what the originator sends


@pytest.mark.parametrize(
    ("op", "key", "name"),
    [
        ("install", K2, INSTALL_KEY),
        ("use", K2, USE_KEY),
        ("remove", K1, REMOVE_KEY),
        ("list", b"", LIST_KEYS),
    ],
)
def test_key_query(op: str, key: bytes, name: str) -> None:
    param = key_query(op, key)
    assert param == QueryParam(name, _request(key))
    assert decode_key_request(param.payload) == KeyRequest(key)
    assert (param.request_ack, param.relay_factor, param.timeout) == (False, 0, 0.0)
    assert param.filter_nodes == () and param.filter_tags == {}
    assert KEY_QUERIES[name] == op and KEY_QUERY_NAMES[op] == name


def test_key_query_list_defaults_to_no_key() -> None:
    assert key_query("list") == key_query("list", b"")
    with pytest.raises(KeyError):
        key_query("rotate")


# ---------------------------------------------------------------------------------------------
# Golden: 06-encrypted's `serf keys` session


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _golden() -> tuple[dict[int, tuple[str, str]], dict[int, dict[str, str]], list[Any]]:
    """(LTime -> (query name, request hex), LTime -> {node: response hex}, RPC results)."""
    queries: dict[int, tuple[str, str]] = {}
    responses: dict[int, dict[str, str]] = {}
    rpc: list[Any] = []
    for line in CAPTURE.read_text().splitlines()[1:]:
        rec = json.loads(line)
        if rec["transport"] == "rpc":
            decoded = rec["decoded"]
            commands = [
                part["value"]["Command"]
                for part in decoded["client_to_agent"]
                if part["kind"] == "request-header"
            ]
            bodies = [p["value"] for p in decoded["agent_to_client"] if p["kind"] == "body"]
            if commands[-1].endswith(("-key", "-keys")):
                rpc.append((commands[-1], bodies[-1]))
            continue
        for node in _walk(rec.get("decoded")):
            kind = node.get("serf_type", "")
            body: Any = node.get("body")
            if kind == "query(4)" and body["Name"] in KEY_QUERIES:
                entry = (body["Name"], body["Payload"]["hex"])
                assert queries.setdefault(body["LTime"], entry) == entry
            elif kind == "queryResponse(5)":
                payload = body["Payload"] or {}  # nil for acks
                if (payload.get("decoded") or {}).get("serf_type") == "keyResponse(8)":
                    node_hex = payload["hex"]
                    seen = responses.setdefault(body["LTime"], {})
                    assert seen.setdefault(body["From"], node_hex) == node_hex
    return queries, responses, rpc


GOLDEN_QUERIES, GOLDEN_RESPONSES, GOLDEN_RPC = _golden()


def test_golden_session_shape() -> None:
    assert [GOLDEN_QUERIES[t][0] for t in sorted(GOLDEN_QUERIES)] == [
        LIST_KEYS,
        INSTALL_KEY,
        USE_KEY,
        REMOVE_KEY,
        LIST_KEYS,
    ]
    assert sorted(GOLDEN_RESPONSES) == sorted(GOLDEN_QUERIES)
    assert all(set(r) == {"e1", "e2"} for r in GOLDEN_RESPONSES.values())
    assert [c for c, _ in GOLDEN_RPC] == [
        "list-keys",
        "install-key",
        "use-key",
        "remove-key",
        "list-keys",
    ]


def test_golden_requests_and_responses_byte_for_byte() -> None:
    """Both agents start with K1; replay the session on one envelope per agent."""
    nodes = {"e1": _envelope(AES, K1), "e2": _envelope(AES, K1)}
    session = [("list", b""), ("install", K2), ("use", K2), ("remove", K1), ("list", b"")]
    for ltime, (op, key) in zip(sorted(GOLDEN_QUERIES), session, strict=True):
        name, request_hex = GOLDEN_QUERIES[ltime]
        param = key_query(op, key)
        assert param.name == name
        assert param.payload.hex() == request_hex, op
        for node, env in nodes.items():
            answer = answer_key_query(name, param.payload, env)
            if name == LIST_KEYS:
                raw = fit_key_list(answer.response, lambda raw: True)
            else:
                raw = encode_key_response(answer.response)
            assert raw is not None
            assert raw.hex() == GOLDEN_RESPONSES[ltime][node], (op, node)


def test_golden_reports_match_the_agent() -> None:
    """KeyReport over the captured responses = the agent's RPC answer (keys, counts, texts)."""
    for ltime, (command, body) in zip(sorted(GOLDEN_RESPONSES), GOLDEN_RPC, strict=True):
        assert GOLDEN_QUERIES[ltime][0] == "_serf_" + command
        report = KeyReport(num_nodes=body["NumNodes"])
        for node, payload_hex in sorted(GOLDEN_RESPONSES[ltime].items()):
            assert not report.complete
            report.add(node, bytes.fromhex(payload_hex))
        assert report.complete
        assert report.num_resp == body["NumResp"]
        assert report.num_err == body["NumErr"]
        assert report.messages == body["Messages"]
        assert (report.keys or None) == body["Keys"]
        assert report.error == ""


# ---------------------------------------------------------------------------------------------
# fit_key_list


def _list_response(n: int) -> KeyResponse:
    keys = tuple(encode_key(bytes([i]) * 32) for i in range(n))
    return KeyResponse(True, "", keys, keys[0])


def test_fit_key_list_keeps_a_list_that_fits() -> None:
    resp = _list_response(5)
    seen: list[bytes] = []

    def fits(raw: bytes) -> bool:
        seen.append(raw)
        return True

    assert fit_key_list(resp, fits) == encode_key_response(resp)
    assert len(seen) == 1


@pytest.mark.parametrize("shown", [0, 1, 9, 10, 18])
def test_fit_key_list_truncates(shown: int) -> None:
    total = 20
    resp = _list_response(total)
    assert resp.keys is not None
    message = f"truncated key list response, showing first {shown} of {total} keys"
    want = encode_key_response(KeyResponse(True, message, resp.keys[:shown], resp.primary_key))
    limit = len(want)
    tried: list[bytes] = []

    def fits(raw: bytes) -> bool:
        tried.append(raw)
        return len(raw) <= limit

    raw = fit_key_list(resp, fits)
    assert raw == want
    decoded = decode_key_response(raw)
    assert decoded.result
    assert decoded.message == message
    assert decoded.keys == resp.keys[:shown]
    assert decoded.primary_key == resp.primary_key  # the primary key is always reported
    # tried with every key, then one fewer at a time
    counts = [len(decode_key_response(r).keys or ()) for r in tried]
    assert counts == list(range(total, shown - 1, -1))
    assert all(len(r) > limit for r in tried[:-1])
    assert decode_key_response(tried[0]).message == ""  # the whole list: no message


def test_fit_key_list_gives_up_when_nothing_fits() -> None:
    calls: list[bytes] = []

    def never(raw: bytes) -> bool:
        calls.append(raw)
        return False

    assert fit_key_list(_list_response(3), never) is None
    assert len(calls) == 4  # 3, 2, 1, 0 keys
    assert decode_key_response(calls[-1]).keys == ()  # an empty list, as Go's Keys[0:0]
    assert b"\xa4Keys\x90" in calls[-1]


def test_fit_key_list_keeps_an_absent_list_nil() -> None:
    """Without a keyring Serf's list-keys answer has a nil ``Keys`` (msgpack nil, ``c0``),
    as Go encodes a nil slice; an empty array would not be Go's bytes."""
    resp = answer_key_query(LIST_KEYS, b"", None).response
    raw = fit_key_list(resp, lambda raw: True)
    assert raw == encode_key_response(resp)
    assert raw is not None and b"\xa4Keys\xc0" in raw
    assert decode_key_response(raw) == KeyResponse(False, KEYRING_EMPTY, None, "")


# ---------------------------------------------------------------------------------------------
# KeyReport (serf KeyManager streamKeyResp)


def test_report_all_succeed_and_complete_early() -> None:
    report = KeyReport(num_nodes=3)
    for i, node in enumerate(["n1", "n2", "n3"]):
        assert not report.complete
        assert report.error == f"{i}/3 nodes reported success"
        report.add(node, _ok())
    assert report.complete
    assert (report.num_resp, report.num_err) == (3, 0)
    assert report.messages == {} and report.keys == {} and report.primary_keys == {}
    assert report.error == ""


def test_report_missing_nodes() -> None:
    report = KeyReport(num_nodes=4)
    report.add("n1", _ok())
    report.add("n2", _ok())
    assert not report.complete
    assert report.error == "2/4 nodes reported success"


def test_report_failures_count_and_win_over_missing_nodes() -> None:
    report = KeyReport(num_nodes=3)
    report.add("n1", _ok())
    report.add("n2", encode_key_response(KeyResponse(False, REMOVE_PRIMARY)))
    assert report.error == "1/3 nodes reported failure"
    report.add("n3", encode_key_response(KeyResponse(False, "")))
    assert report.complete
    assert (report.num_resp, report.num_err) == (3, 2)
    assert report.messages == {"n2": REMOVE_PRIMARY, "n3": ""}
    assert report.error == "2/3 nodes reported failure"


def test_report_warning_is_a_message_not_an_error() -> None:
    report = KeyReport(num_nodes=2)
    warning = "truncated key list response, showing first 1 of 3 keys"
    report.add("n1", _ok(warning))
    report.add("n2", _ok())
    assert report.messages == {"n1": warning}
    assert report.num_err == 0
    assert report.error == ""


def test_report_tallies_keys_and_primary_keys() -> None:
    a, b, c = encode_key(A), encode_key(B), encode_key(S16)
    report = KeyReport(num_nodes=4)
    report.add("n1", encode_key_response(KeyResponse(True, "", (a, b), a)))
    report.add("n2", encode_key_response(KeyResponse(True, "", (b, a, c), b)))
    report.add("n3", encode_key_response(KeyResponse(True, "", (a,), a)))
    # a failed answer's keys are still counted (serf does not skip them)
    report.add("n4", encode_key_response(KeyResponse(False, "disk full", (c,), c)))
    assert report.keys == {a: 3, b: 2, c: 2}
    assert report.primary_keys == {a: 2, b: 1, c: 1}
    assert report.messages == {"n4": "disk full"}
    assert report.error == "1/4 nodes reported failure"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "Invalid key query response type: []"),
        (b"\x07\x81\xa3Key\xa0", "Invalid key query response type: [7 129 163 75 101 121 160]"),
        (b"\x00", "Invalid key query response type: [0]"),
        (b"\x08", "Failed to decode key query response: [8]"),
        (b"\x08\xc1", "Failed to decode key query response: [8 193]"),
        (b"\x08\x93\x01\x02\x03", "Failed to decode key query response: [8 147 1 2 3]"),
        (
            b"\x08\x81\xa6Result\xa3yes",
            "Failed to decode key query response: "
            "[8 129 166 82 101 115 117 108 116 163 121 101 115]",
        ),
        (
            b"\x08\x81\xa4Keys\x05",
            "Failed to decode key query response: [8 129 164 75 101 121 115 5]",
        ),
    ],
)
def test_report_invalid_responses(payload: bytes, message: str) -> None:
    report = KeyReport(num_nodes=2)
    report.add("bad", payload)
    report.add("good", _ok())
    assert report.complete
    assert report.messages == {"bad": message}
    assert (report.num_resp, report.num_err) == (2, 1)
    assert report.keys == {} and report.primary_keys == {}
    assert report.error == "1/2 nodes reported failure"


def test_report_with_no_nodes_is_complete() -> None:
    report = KeyReport(num_nodes=0)
    assert report.complete
    assert report.error == ""
