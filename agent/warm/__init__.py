"""Warm slots: a process per slot that has imported hpo and the ``--preload`` modules
once, and forks a child per task that becomes the task's script.

``protocol`` frames the messages (and the file descriptors) on the private socket
between an agent and its warm process; ``zygote`` is that process (started with the
agent's own interpreter); ``child`` is what a forked child does to become
``python script.py``; ``proctitle`` gives it the script's command line in ``ps``;
``handle`` is the agent's Popen-like view of a forked script; ``slot`` starts, restarts
and asks the warm process of one slot; ``policy`` says when a task may run warm.

This package is imported by the warm process itself: it stays on the standard library.
"""
