"""SenderPool: the open model's bounded pool of long-lived sender greenlets (gevent only,
no Locust; jobs are held by events, never by real sleeps)."""

from __future__ import annotations

import gevent
from gevent.event import Event
from gevent.hub import Waiter
from gevent.pool import Group

from spikegate.locustfiles.sender import SenderPool


def settle() -> None:
    """Let every runnable greenlet and pending hub callback run."""
    for _ in range(3):
        gevent.sleep(0)


def test_a_held_job_does_not_hold_the_next_ones_and_the_limit_refuses_the_rest() -> None:
    release = Event()
    done: list[int] = []

    def run(job: int) -> None:
        release.wait()
        done.append(job)

    group = Group()
    pool: SenderPool[int] = SenderPool(run, limit=3, group=group)
    assert [pool.submit(i) for i in range(4)] == [True, True, True, False]
    settle()
    assert done == [] and pool.size == 3
    release.set()
    settle()
    assert sorted(done) == [0, 1, 2]
    pool.close()
    assert group.join(timeout=1.0)


def test_senders_are_reused_one_job_at_a_time() -> None:
    seen: list[object] = []

    def run(job: int) -> None:
        seen.append(gevent.getcurrent())

    group = Group()
    pool: SenderPool[int] = SenderPool(run, limit=100, group=group)
    for i in range(50):
        assert pool.submit(i)
        settle()
    assert len(seen) == 50 and len(set(map(id, seen))) == 1
    assert pool.size == 1 and pool.idle == 1
    pool.close()
    assert group.join(timeout=1.0) and pool.size == 0


def test_close_ends_parked_senders_at_once_and_busy_ones_after_their_job() -> None:
    release = Event()
    done: list[int] = []

    def run(job: int) -> None:
        if job == 0:
            release.wait()
        done.append(job)

    group = Group()
    pool: SenderPool[int] = SenderPool(run, limit=10, group=group)
    pool.submit(0)
    pool.submit(1)
    settle()
    assert pool.idle == 1
    pool.close()
    assert not pool.submit(2)  # closed: the caller counts it as shortfall
    settle()
    assert pool.size == 1  # the parked one ended, the held one still runs
    release.set()
    assert group.join(timeout=1.0)
    assert sorted(done) == [0, 1] and pool.size == 0


def test_a_sender_killed_while_parked_leaves_no_stale_slot() -> None:
    done: list[int] = []
    group = Group()
    pool: SenderPool[int] = SenderPool(done.append, limit=10, group=group)
    pool.submit(0)
    settle()
    assert pool.idle == 1
    group.kill(block=True, timeout=1.0)
    assert pool.idle == 0 and pool.size == 0
    assert pool.submit(1)
    settle()
    assert done == [0, 1]
    pool.close()
    assert group.join(timeout=1.0)


def test_a_job_handed_to_a_sender_that_is_gone_runs_on_a_new_one() -> None:
    """The handoff callback finds the parked sender killed (its waiter empty): a new
    sender runs the job, none is lost."""
    done: list[int] = []
    group = Group()
    pool: SenderPool[int] = SenderPool(done.append, limit=10, group=group)
    pool._handoff(Waiter(), 7)  # what a kill landing between submit and handoff leaves
    settle()
    assert done == [7] and pool.size == 1
    pool.close()
    assert group.join(timeout=1.0)
