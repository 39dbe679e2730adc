"""Hypothesis strategies for memberlist message records (shared by the wire tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from serf_trio.wire.messages import (
    VSN_LEN,
    Ack,
    Alive,
    Dead,
    Err,
    IndirectPing,
    Message,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)

u32 = st.integers(0, 0xFFFF_FFFF)
u16 = st.integers(0, 0xFFFF)
# Go strings are UTF-8 on the wire; lone surrogates cannot be encoded.
names = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
ips = st.sampled_from([b"", bytes(4), b"\x7f\x00\x00\x0b", bytes(range(16))]) | st.binary(
    max_size=16
)
blobs = st.binary(max_size=300)
opt_blobs = st.none() | blobs
vsns = st.just(b"") | st.binary(min_size=VSN_LEN, max_size=VSN_LEN)

pings = st.builds(Ping, u32, names, ips, u16, names)
indirect_pings = st.builds(IndirectPing, u32, ips, u16, names, st.booleans(), ips, u16, names)
acks = st.builds(Ack, u32, opt_blobs)
nacks = st.builds(Nack, u32)
suspects = st.builds(Suspect, u32, names, names)
deads = st.builds(Dead, u32, names, names)
alives = st.builds(Alive, u32, names, ips, u16, opt_blobs, vsns)
user_msgs = st.builds(UserMsg, st.binary(max_size=600))
errs = st.builds(Err, names)

packet_messages: st.SearchStrategy[Message] = st.one_of(
    pings, indirect_pings, acks, nacks, suspects, deads, alives, user_msgs, errs
)

node_states = st.builds(PushNodeState, names, ips, u16, opt_blobs, u32, st.integers(0, 3), vsns)
push_pulls = st.builds(
    PushPull, st.booleans(), st.lists(node_states, max_size=8).map(tuple), st.binary(max_size=400)
)
stream_messages: st.SearchStrategy[Message] = st.one_of(pings, acks, errs, user_msgs, push_pulls)
