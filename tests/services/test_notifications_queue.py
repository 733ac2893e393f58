"""The notification queue (services/push.py): events are evaluated after commit in the
background; :meth:`Notifications.settle` waits for the events up to a position only, so a
steady stream of new events never holds /sync or a receipt up."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from bastion.services.push import Notifications
from bastion.services.room_engine import PersistedEvents


def batch(pos: int) -> PersistedEvents:
    return PersistedEvents([({"type": "m.room.message"}, f"$e{pos}", "!r:x", pos)])


def test_settle_waits_for_its_position_only():
    async def go() -> None:
        n = Notifications(SimpleNamespace())  # type: ignore[arg-type]
        gates: dict[int, asyncio.Event] = {}
        done: list[int] = []

        async def process(events):
            pos = events[0][3]
            gates.setdefault(pos, asyncio.Event())
            await gates[pos].wait()
            done.extend(e[3] for e in events)

        n._process = process  # type: ignore[method-assign]
        assert not n.pending_upto(100)
        await n.settle(100)  # nothing queued: at once
        n.events_persisted(batch(5))
        await asyncio.sleep(0)
        n.events_persisted(batch(9))  # queued while 5 is evaluated
        assert n.pending_upto(5) and n.pending_upto(9) and not n.pending_upto(4)
        waiter = asyncio.ensure_future(n.settle(5))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        gates[5].set()
        await asyncio.wait_for(waiter, 1)  # 9 is still being evaluated: not waited for
        assert done == [5] and n.pending_upto(9) and not n.pending_upto(8)
        gates.setdefault(9, asyncio.Event()).set()
        await asyncio.wait_for(n.settle(9), 1)
        assert done == [5, 9] and not n.pending_upto(10**9)
        await n.wait_idle()

    asyncio.run(go())


def test_a_failing_batch_does_not_stop_the_queue():
    async def go() -> None:
        n = Notifications(SimpleNamespace())  # type: ignore[arg-type]
        seen: list[int] = []

        async def process(events):
            seen.append(events[0][3])
            if events[0][3] == 1:
                raise RuntimeError("boom")

        n._process = process  # type: ignore[method-assign]
        n.events_persisted(batch(1))
        await n.settle(1)
        n.events_persisted(batch(2))
        await n.settle(2)
        assert seen == [1, 2] and not n.pending_upto(2)
        await n.wait_idle()

    asyncio.run(go())
