"""The interleaved timer: every runner on every chunk, in blocks that take turns in a new order."""

from __future__ import annotations

import numpy as np

from eeopt.measure import compare_batch1


def test_interleaved_times_every_runner_on_every_chunk() -> None:
    """Plain, program and the extra runners each see every chunk once, block by block, in an
    order that changes from block to block."""
    calls: list[tuple[str, int]] = []

    def runner(name: str):  # type: ignore[no-untyped-def]
        return lambda f: calls.append((name, int(f["x"][0, 0])))

    names = ["plain", "program", "a", "b"]
    feeds = {"x": np.arange(120, dtype=np.float32).reshape(120, 1)}
    c = compare_batch1(runner("plain"), runner("program"), feeds, warmup=0, block=4,
                       others={"a": runner("a"), "b": runner("b")})
    assert set(c.others) == {"a", "b"} and c.others["a"].calls == c.plain.calls == 120
    for name in names:
        assert [i for n, i in calls if n == name] == list(range(120))
    orders = set()
    for pos in range(0, len(calls), 16):  # blocks of 4 chunks: each runner's 4 calls in a row
        run = [calls[pos + 4 * j][0] for j in range(4)]
        assert sorted(run) == sorted(names)
        assert all(calls[pos + 4 * j + i][0] == run[j] for j in range(4) for i in range(4))
        orders.add(tuple(run))
    assert len(orders) > 4  # the order changes
