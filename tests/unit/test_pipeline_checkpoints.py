"""The checkpoint moves only to confirmed transaction boundaries, without services.

The real ReaderPipeline (built through its constructor from tests/unit/fakes.py) reads generated
transactions (some with no mapped row, so no message) and ticks from a fake binlog source; between
them a simulated broker confirms at random through the memory publisher: nothing, the next few
messages (part of a transaction, or several), one message out of order, everything up to a tag, or a
nack. The checkpointer thread persists as often as it can meanwhile. Every checkpoint saved must be
the end of a transaction all of whose messages, and all earlier ones, were confirmed when it was
saved; the checkpoints never go back; after a nack nothing at or past the nacked message is
checkpointed; and the last checkpoint is the furthest boundary confirmed.

Seeded: ``CDC_TEST_SEED=<seed>`` repeats a run (the seed is printed).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator

import pytest
from fakes import SOURCE, UNMAPPED, FakeBinlogSource, MemoryPublishers, RecordingStateStore, make_pipeline, settings, txn

from cdc.domain.envelope import binlog_file_seq
from cdc.domain.positions import Checkpoint
from cdc.source.binlog_stream import SourceTxn, Tick

SEED = int(os.environ.get("CDC_TEST_SEED") or random.randrange(2**32))
START = Checkpoint(file="bin.000001", pos=4)


class Broker:
    """What the simulated broker has confirmed, recorded before the publisher hears of it (so that a
    checkpoint saved meanwhile is checked against no more than was really confirmed)."""

    def __init__(self, publishers: MemoryPublishers, rnd: random.Random) -> None:
        self.publishers, self.rnd = publishers, rnd
        self.lock = threading.Lock()
        self.acked: set[int] = set()
        self.upto = 0  # every tag <= upto is acked
        self.nacked: int | None = None
        self.saves: list[tuple[Checkpoint, int]] = []  # (checkpoint, upto when it was saved)

    def on_save(self, checkpoint: Checkpoint) -> None:
        with self.lock:
            self.saves.append((checkpoint, self.upto))

    def _record(self, tags: range | list[int]) -> None:
        with self.lock:
            self.acked.update(tags)
            while self.upto + 1 in self.acked:
                self.upto += 1

    def step(self) -> bool:
        """One random broker action; False after a nack (the stream stops)."""
        publisher = self.publishers.current
        last = len(publisher.messages)
        unacked = [t for t in range(self.upto + 1, last + 1) if t not in self.acked]
        action = self.rnd.random()
        if not unacked or action < 0.35:
            return True
        if action < 0.04 + 0.35:
            tag = self.rnd.choice(unacked)
            self.nacked = tag
            publisher.nack(tag)
            return False
        if action < 0.6:  # the next few, in order: part of a transaction, or more than one
            n = self.rnd.randint(1, 4)
            self._record(range(1, min(publisher._tracker.acked_count + n, last) + 1))
            publisher.confirm_next(n)
        elif action < 0.85:  # one, out of order
            tag = self.rnd.choice(unacked)
            self._record([tag])
            publisher.ack(tag)
        else:  # everything up to a tag (multiple)
            tag = self.rnd.choice(unacked)
            self._record(range(1, tag + 1))
            publisher.ack(tag, multiple=True)
        return True


def _key(cp: Checkpoint) -> tuple[int, int]:
    return binlog_file_seq(cp.file), cp.pos


def _one_run(rnd: random.Random) -> None:
    publishers = MemoryPublishers(auto_confirm=False)
    broker = Broker(publishers, rnd)
    state = RecordingStateStore(on_save=broker.on_save)
    state.save_checkpoint(SOURCE, START)
    broker.saves.clear()
    stop = threading.Event()
    n = rnd.randint(1, 25)
    txns = [txn(i + 1, rnd.choice((0, 1, 1, 2, 3, 5)), table=UNMAPPED if rnd.random() < 0.15 else "items") for i in range(n)]
    confirm_all_at_end = rnd.random() < 0.5

    def script(start: Checkpoint, stop_: threading.Event) -> Iterator[SourceTxn | Tick]:
        for t in txns:
            while rnd.random() < 0.3:
                yield Tick(rnd.choice((None, t.end)))
            yield t
            for _ in range(rnd.randint(0, 2)):
                if not broker.step():
                    stop.set()
                    return
            if rnd.random() < 0.1:
                time.sleep(0.002)  # let the checkpointer thread in
        if confirm_all_at_end and publishers.current.messages:
            last = len(publishers.current.messages)
            broker._record(range(1, last + 1))
            publishers.current.confirm_all()
        stop.set()

    source = FakeBinlogSource(script)
    pipeline = make_pipeline(source=source, state=state, publishers=publishers,
                             config=settings(batch_events=rnd.choice((1, 2, 100))), checkpoint_interval_s=0.0005)
    pipeline.run(stop)

    publisher = publishers.current
    assert len(publishers.made) == 1 and source.opened == [START]
    # the last delivery tag of each transaction (an empty one ends at the tag before it)
    last_tag: dict[Checkpoint, int] = {}
    tag = 0
    for token, messages in publisher.transactions:
        tag += len(messages)
        last_tag[token] = tag
    assert list(last_tag) == [t.end for t in txns[:len(last_tag)]]

    previous = START
    for checkpoint, upto in broker.saves:
        assert checkpoint in last_tag, f"{checkpoint} is not the end of a published transaction"
        assert last_tag[checkpoint] <= upto, f"{checkpoint} saved with messages up to {last_tag[checkpoint]} unconfirmed (upto {upto})"
        assert _key(checkpoint) > _key(previous), f"checkpoint went from {previous} to {checkpoint}"
        if broker.nacked is not None:
            assert last_tag[checkpoint] < broker.nacked, f"{checkpoint} is past the nacked message {broker.nacked}"
        previous = checkpoint
    # and it got as far as was confirmed: the furthest transaction whose messages, and all before, were acked
    confirmed = [t for t, last in last_tag.items() if last <= broker.upto and (broker.nacked is None or last < broker.nacked)]
    assert state.load_checkpoint(SOURCE) == (confirmed[-1] if confirmed else START)


@pytest.mark.parametrize("run", range(60))
def test_the_checkpoint_moves_only_to_confirmed_transaction_boundaries(run: int) -> None:
    seed = SEED + run
    print(f"seed {seed} (CDC_TEST_SEED={SEED} to repeat the series; this is run {run})")
    _one_run(random.Random(seed))


def test_after_a_nack_the_stream_is_reopened_from_the_last_confirmed_boundary() -> None:
    publishers = MemoryPublishers(auto_confirm=False)
    state = RecordingStateStore()
    state.save_checkpoint(SOURCE, START)
    stop = threading.Event()
    t1, t2, t3 = txn(1, 2), txn(2, 1), txn(3, 2)

    def script(start: Checkpoint, stop_: threading.Event) -> Iterator[SourceTxn | Tick]:
        if start == START:
            yield t1
            yield t2
            publishers.current.confirm_next(2)  # t1's two messages
            yield Tick()
            publishers.current.nack(3)  # t2's
            yield t3  # the publisher refuses it: the run ends, and the pipeline reads again from t1's end
        else:
            yield t2
            yield t3
            publishers.current.confirm_all()
            stop.set()

    source = FakeBinlogSource(script)
    pipeline = make_pipeline(source=source, state=state, publishers=publishers)
    pipeline.run(stop)
    assert source.opened == [START, t1.end]
    assert state.saved == [START, t1.end, t3.end] and len(publishers.made) == 2
