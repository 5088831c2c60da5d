"""hpo.agent: the Celery worker that runs cloned tasks (task runner, GPU slots,
heartbeats, resource monitor, the ``hpo-agent`` CLI). Built by the agent issue; the
child side of its report channel is already in ``hpo.sdk.channel`` and ``hpo.sdk.agent_backend``."""
