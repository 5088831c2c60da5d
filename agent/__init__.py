"""hpo.agent: ``hpo-agent``, the Celery worker that runs cloned tasks.

``cli`` parses its options; ``worker`` is the Celery worker (heartbeats, stop requests,
the reaper, warm shutdown) and ``consumer`` its message intake (a message that is not an
hpo task message is logged once and dropped); ``runner`` runs one task from claim to
outcome; ``script_env`` (what a script gets of the agent's environment: no store or
broker password unless ``--pass-credentials``), ``slots`` (GPU groups or CPU slots),
``process`` (start, supervision and tree kill), ``warm`` (each slot's warm process,
which forks the scripts: ``--preload``), ``channel_server`` (the agent's side of the
report channel in ``hpo.sdk.channel``), ``recorder`` (batched writes to the store) and
``monitor`` (CPU, memory, GPU samples) serve it.
"""
