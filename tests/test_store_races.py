"""Status writes racing each other from several processes, on SQLite and PostgreSQL.

Each test starts one process per role on the same tasks. In every round all of them
wait at a barrier, then act on that round's task at once, so that the writes meet on
one row; many rounds make the bad interleavings likely where the code allows them. The
assertions are the invariants the store promises whatever the interleaving: where two
changes exclude each other exactly one wins, an abort racing a claim never leaves a
claimed task ``stopped`` behind its claimant's back, a finished attempt is never
re-queued, and a write never lands on a state it did not decide on.

On SQLite every write transaction holds the database lock from its start, so these
pass there by construction; on PostgreSQL (READ COMMITTED) a row read first may change
before the write, which is what ``hpo.store.tasks`` guards against with one conditional
UPDATE per change.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import Counter
from typing import Any

import pytest

from hpo.errors import InvalidTransition
from hpo.lifecycle import Status
from hpo.store import Store, open_store
from tests.processes import run_together

ROUNDS = 200
BARRIER_TIMEOUT_S = 60
REPORT_TIMEOUT_S = 150
# After the barrier each process waits a random time below the round's spread, the
# spreads taking turns by round. The barrier alone releases its processes in an order that
# the scheduler makes regular (the last to arrive runs first; on a loaded machine the
# others wake milliseconds later, far longer than one write), so without a spread one
# order can win all rounds and the other interleavings go untested. Spread 0 keeps the
# tightest race; the widest outlasts any wake-up delay, so every order is played.
SPREADS_S = (0.0, 0.0005, 0.002, 0.008, 0.032)

# An outcome of one call: ("ok", what it returned) or ("refused", the error's message).
Outcome = tuple[str, Any]


# ----- the processes ---------------------------------------------------------------
# Module-level, so the 'spawn' start method can pickle them.


def _act(store: Store, role: str, task_id: str) -> Any:
    """What a process in ``role`` ("kind-name" or "kind:argument") does to one task;
    returns something picklable."""
    head, _, arg = role.partition(":")
    kind = head.partition("-")[0]
    if kind == "claim":
        return store.claim(task_id, role)
    if kind == "abort":
        task = store.request_stop(task_id, f"aborted by {role}")
        return (task.status.value, task.stop_requested, task.attempt)
    if kind == "finish":
        return store.finish(task_id, 1, arg, message=f"finished by {role}")
    if kind == "requeue":
        return store.requeue(task_id, 1, f"requeued by {role}") is not None
    if kind == "enqueue":
        task = store.enqueue(task_id, arg)
        return (task.status.value, task.queue)
    if kind == "dequeue":
        return store.dequeue(task_id).status.value
    raise AssertionError(f"unknown role {role!r}")


def _play(url: str, task_ids: list[str], role: str, barrier: Any, results: Any) -> None:
    """One round per task: wait for every process, then act on that task."""
    try:
        store = open_store(url)
        outcomes: list[Outcome] = []
        try:
            for round_number, task_id in enumerate(task_ids):
                barrier.wait(BARRIER_TIMEOUT_S)
                spread = SPREADS_S[round_number % len(SPREADS_S)]
                if spread:
                    time.sleep(random.uniform(0, spread))
                try:
                    outcomes.append(("ok", _act(store, role, task_id)))
                except InvalidTransition as exc:
                    outcomes.append(("refused", str(exc)))
        finally:
            store.close()
        results.put((role, "ok", outcomes))
    except BaseException:
        barrier.abort()
        results.put((role, "error", traceback.format_exc()))


def play_rounds(url: str, task_ids: list[str], roles: list[str]) -> dict[str, list[Outcome]]:
    """Run one process per role over ``task_ids``, round by round; each role's outcomes,
    in task order."""
    return run_together(_play, {role: (url, task_ids, role) for role in roles},
                        timeout=REPORT_TIMEOUT_S)


def by_task(task_ids: list[str], outcomes: dict[str, list[Outcome]]
            ) -> dict[str, dict[str, Outcome]]:
    """The outcomes regrouped: task id -> role -> outcome."""
    return {task_id: {role: outcomes[role][i] for role in outcomes}
            for i, task_id in enumerate(task_ids)}


# ----- setting the tasks up ---------------------------------------------------------


def new_tasks(store: Store, *, queued: bool = False, claimed: bool = False,
              count: int = ROUNDS) -> list[str]:
    """``count`` new tasks, created, queued or claimed by a first worker (attempt 1)."""
    task_ids = []
    for i in range(count):
        task_id = store.create_task("races", f"t{i}").id
        if queued or claimed:
            store.enqueue(task_id, "default")
        if claimed:
            assert store.claim(task_id, "first-worker") == 1
        task_ids.append(task_id)
    return task_ids


# ----- the races ----------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_an_abort_racing_two_claims_stops_the_task_queued_or_flags_the_claimed_one(
        store: Store, store_url: str) -> None:
    # Given queued tasks
    task_ids = new_tasks(store, queued=True)

    # When two claimants and two aborters act on each at once
    claimants, aborters = ["claim-a", "claim-b"], ["abort-a", "abort-b"]
    rounds = by_task(task_ids, play_rounds(store_url, task_ids, claimants + aborters))

    # Then each task was either stopped while queued, never claimed, or claimed by one
    # claimant and left running with its stop flagged for that claimant's agent
    kinds: Counter[str] = Counter()
    for task in store.get_tasks(task_ids):
        outcome = rounds[task.id]
        winners = [c for c in claimants if outcome[c] != ("ok", None)]
        aborts = [outcome[a] for a in aborters]
        assert len(winners) <= 1, (task, outcome)
        if winners:
            kinds["claimed"] += 1
            assert outcome[winners[0]] == ("ok", 1), (task, outcome)
            assert (task.status, task.worker, task.attempt) == (
                Status.running, winners[0], 1), (task, outcome)
            assert task.stop_requested, f"claimed and aborted, but not flagged: {task}"
            # every abort saw the running task and flagged it
            assert aborts == [("ok", ("running", True, 1))] * 2, (task, outcome)
        else:
            kinds["stopped"] += 1
            assert (task.status, task.stop_requested) == (Status.stopped, False), task
            # one abort stopped it; the other did the same or found it stopped already
            assert ("ok", ("stopped", False, 0)) in aborts, (task, outcome)
            for kind, payload in aborts:
                assert kind == "ok" or "is stopped" in payload, (task, outcome)
    assert kinds["claimed"] and kinds["stopped"], f"the processes did not overlap: {kinds}"


@pytest.mark.timeout(240)
def test_a_dequeue_racing_two_claims_has_exactly_one_winner(
        store: Store, store_url: str) -> None:
    # Given queued tasks
    task_ids = new_tasks(store, queued=True)

    # When two claimants and one dequeuer act on each at once
    claimants = ["claim-a", "claim-b"]
    rounds = by_task(task_ids, play_rounds(store_url, task_ids, [*claimants, "dequeue"]))

    # Then either one claimant runs it or it is back to created, never both
    kinds: Counter[str] = Counter()
    for task in store.get_tasks(task_ids):
        outcome = rounds[task.id]
        winners = [c for c in claimants if outcome[c] != ("ok", None)]
        dequeued = outcome["dequeue"] == ("ok", "created")
        assert len(winners) + dequeued == 1, (task, outcome)
        if dequeued:
            kinds["dequeued"] += 1
            assert (task.status, task.worker, task.attempt) == (Status.created, None, 0)
        else:
            kinds["claimed"] += 1
            assert (task.status, task.worker, task.attempt) == (
                Status.running, winners[0], 1), (task, outcome)
            assert "is running" in outcome["dequeue"][1], (task, outcome)
    assert kinds["claimed"] and kinds["dequeued"], f"the processes did not overlap: {kinds}"


@pytest.mark.timeout(240)
def test_enqueues_racing_dequeues_alternate_and_leave_the_task_where_the_last_put_it(
        store: Store, store_url: str) -> None:
    # Given created tasks
    task_ids = new_tasks(store)

    # When two enqueuers (each to its own queue) and two dequeuers act on each at once
    enqueuers, dequeuers = ["enqueue:qa", "enqueue:qb"], ["dequeue-a", "dequeue-b"]
    rounds = by_task(task_ids, play_rounds(store_url, task_ids, enqueuers + dequeuers))

    # Then the changes that succeeded alternate, created -> queued -> created ...: never
    # two enqueues (one task published twice) or two dequeues of one enqueue
    kinds: Counter[str] = Counter()
    for task in store.get_tasks(task_ids):
        outcome = rounds[task.id]
        enqueued = [e.partition(":")[2] for e in enqueuers if outcome[e][0] == "ok"]
        dequeued = [d for d in dequeuers if outcome[d][0] == "ok"]
        assert len(enqueued) - len(dequeued) in (0, 1), (task, outcome)
        for e in enqueuers:
            if outcome[e][0] == "ok":
                assert outcome[e][1] == ("queued", e.partition(":")[2]), (task, outcome)
        for d in dequeuers:
            assert outcome[d] == ("ok", "created") or "is created" in outcome[d][1], (
                task, outcome)
        if len(enqueued) > len(dequeued):
            assert task.status is Status.queued, (task, outcome)
            assert task.queue in enqueued, (task, outcome)
        else:
            assert task.status is Status.created, (task, outcome)
        kinds[f"{len(enqueued)} enqueued, {len(dequeued)} dequeued"] += 1
    assert len(kinds) > 1, f"the processes did not overlap: {kinds}"


@pytest.mark.timeout(240)
def test_a_finish_racing_a_requeue_of_the_same_attempt_has_exactly_one_winner(
        store: Store, store_url: str) -> None:
    # Given tasks claimed by a first worker (attempt 1)
    task_ids = new_tasks(store, claimed=True)

    # When that attempt is finished twice (completed, failed) and re-queued at once
    roles = ["finish:completed", "finish:failed", "requeue"]
    rounds = by_task(task_ids, play_rounds(store_url, task_ids, roles))

    # Then exactly one of them took effect, and the task shows that one: a finished
    # attempt is never re-queued, and a re-queued one never finished
    expected = {"finish:completed": Status.completed, "finish:failed": Status.failed,
                "requeue": Status.queued}
    kinds: Counter[str] = Counter()
    for task in store.get_tasks(task_ids):
        outcome = rounds[task.id]
        winners = [r for r in roles if outcome[r] == ("ok", True)]
        assert len(winners) == 1, (task, outcome)
        winner = winners[0]
        kinds[winner] += 1
        assert task.status is expected[winner], (task, outcome)
        assert task.attempt == 1, (task, outcome)
        if winner == "requeue":
            assert (task.worker, task.ended_at) == (None, None), task
            assert task.status_message == "requeued by requeue", task
        else:
            assert task.status_message == f"finished by {winner}", task
            assert task.ended_at is not None, task
    assert len(kinds) > 1, f"the processes did not overlap: {kinds}"


@pytest.mark.timeout(240)
def test_an_abort_racing_a_finish_flags_the_running_attempt_or_is_refused(
        store: Store, store_url: str) -> None:
    # Given tasks claimed by a first worker (attempt 1)
    task_ids = new_tasks(store, claimed=True)

    # When the attempt finishes while an abort arrives
    rounds = by_task(task_ids, play_rounds(store_url, task_ids, ["finish:completed",
                                                                  "abort"]))

    # Then the finish always wins its attempt; the abort either flagged the attempt
    # while it ran or found it completed and was refused: it never writes on the
    # completed task (its flag, its message) after the fact
    kinds: Counter[str] = Counter()
    for task in store.get_tasks(task_ids):
        outcome = rounds[task.id]
        assert outcome["finish:completed"] == ("ok", True), (task, outcome)
        assert task.status is Status.completed, (task, outcome)
        assert task.status_message == "finished by finish:completed", (task, outcome)
        if outcome["abort"][0] == "ok":
            kinds["flagged"] += 1
            assert outcome["abort"][1] == ("running", True, 1), (task, outcome)
            assert task.stop_requested, (task, outcome)
        else:
            kinds["refused"] += 1
            assert "is completed" in outcome["abort"][1], (task, outcome)
            assert not task.stop_requested, (task, outcome)
    assert kinds["flagged"] and kinds["refused"], f"the processes did not overlap: {kinds}"


@pytest.mark.timeout(240)
def test_an_abort_racing_a_requeue_always_ends_stopped(store: Store, store_url: str) -> None:
    # Given tasks claimed by a first worker (attempt 1)
    task_ids = new_tasks(store, claimed=True)

    # When the user aborts each while a reaper re-queues it (its agent taken for lost)
    rounds = by_task(task_ids, play_rounds(store_url, task_ids, ["abort", "requeue"]))

    # Then the abort is never lost: flagged first, the re-queue ends the attempt stopped;
    # re-queued first, the abort stops the queued task at once. Never queued again.
    kinds: Counter[str] = Counter()
    for task in store.get_tasks(task_ids):
        outcome = rounds[task.id]
        assert task.status is Status.stopped, (task, outcome)
        assert not task.stop_requested, (task, outcome)
        assert outcome["requeue"] == ("ok", True), (task, outcome)
        assert outcome["abort"][0] == "ok", (task, outcome)
        kinds["abort first" if outcome["abort"][1][0] == "running" else
              "requeue first"] += 1
    assert len(kinds) > 1, f"the processes did not overlap: {kinds}"


def test_play_rounds_reports_a_process_that_failed(store: Store, store_url: str) -> None:
    # A broken role fails the test with its traceback instead of hanging at the barrier.
    task_ids = new_tasks(store, count=3)
    with pytest.raises(AssertionError, match="unknown role"):
        play_rounds(store_url, task_ids, ["claim-a", "no-such-role"])

