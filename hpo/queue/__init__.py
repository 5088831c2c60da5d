"""hpo.queue: the execution queues, as Celery queues.

``app`` makes the one Celery app per broker URL (JSON only, late acks, one task
``hpo.run_task(task_id)``) and publishes; ``embedded`` is the broker that needs no server
(kombu's SQLAlchemy transport on a SQLite file, fixed for several processes);
``redis_transport`` is kombu's Redis transport made safe against entries that are not
kombu messages; ``messages`` says what an hpo task message is and drops anything else in
one logged line; ``dispatch`` moves a task to queued in the store and publishes its
message (and re-queues a running one), the only place that does; ``reaper`` finds running
tasks whose agent stopped heartbeating and re-queues or fails them.
"""
