"""Testing your own code against a simulated cluster, written as a user of the library would
write it (no helpers from this repository's tests): the two examples' functions, unchanged,
on serf-trio's in-memory network under trio's MockClock.  Virtual time makes the seconds of
failure detection and query timeouts cost milliseconds, and the seeded network model and
per-node ``rng`` make the run reproducible.  ``docs/library.md`` shows this test."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import service_registry
import trio
import trio.testing
import who_has

import serf_trio
from serf_trio.testing.memnet import MemoryNetwork
from serf_trio.testing.netmodel import NetModel


def test_who_has_and_the_registry_on_a_simulated_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        net = MemoryNetwork(NetModel(seed=7))  # latency, loss, partitions: all seeded
        # Hosts on the simulated network: 10.0.0.N:7946, N = 0 for the registry, 1..5.
        addr = [serf_trio.Address(f"10.0.0.{i}", 7946) for i in range(6)]
        registry = service_registry.Registry("registry")
        stop = trio.Event()
        async with trio.open_nursery() as outer:
            await outer.start(net.run)
            async with trio.open_nursery() as cluster:
                run_registry = partial(
                    service_registry.serve, bind=str(addr[0]), network=net, rng=random.Random(0)
                )
                await cluster.start(run_registry, "registry", {"role": "registry"}, registry, stop)
                nodes = []
                for i in range(1, 6):
                    data = tmp_path / f"n{i}"
                    data.mkdir()
                    if i % 2:  # n1, n3 and n5 have the file, i bytes long
                        (data / "model.bin").write_bytes(b"x" * i)
                    run = partial(
                        who_has.serve,
                        bind=str(addr[i]),
                        seeds=[str(addr[0])],
                        network=net,
                        rng=random.Random(i),
                    )
                    nodes.append(await cluster.start(run, f"n{i}", data, stop))

                with trio.fail_after(60):  # virtual seconds
                    await registry.wait_for(lambda r: len(r.peers) == 5)
                    holders = await who_has.who_has(nodes[1], "model.bin")
                assert [(h.node, h.size) for h in holders] == [("n1", 1), ("n3", 3), ("n5", 5)]

                net.crash(addr[3])  # n3's host dies: no leave, its packets vanish
                with trio.fail_after(60):
                    await registry.wait_for(lambda r: "n3" not in r.peers)
                    holders = await who_has.who_has(nodes[1], "model.bin")
                assert ("member-failed", "n3") in registry.recent
                assert ("member-leave", "n3") not in registry.recent
                assert [h.node for h in holders] == ["n1", "n5"]
                assert sorted(registry.peers) == ["n1", "n2", "n4", "n5"]

                stop.set()  # every serve() leaves gracefully and returns
            outer.cancel_scope.cancel()  # then stop the network itself

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_library_doc_shows_this_test() -> None:
    """``docs/library.md`` shows the test above: every line it shows is here, in order."""
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "library.md").read_text()
    section = doc[doc.index("## Testing your code on a simulated cluster") :]
    start = section.index("```python\n") + len("```python\n")
    shown = [line for line in section[start : section.index("```", start)].splitlines() if line]
    assert "    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))" in shown
    source = iter(Path(__file__).read_text().splitlines())
    assert [line for line in shown if line not in source] == []
