"""The command line ``ps`` and psutil show for this process, rewritten in place.

A forked child starts with its warm process's command line; rewritten, it shows
``python script.py ARGS`` as a spawned one would, so ``ps``, ``pgrep -f`` and tools that
find a script by its command line see no difference. The kernel shows the argument area
up to its first NUL when its last byte is not NUL (what setproctitle(3) does); the area
cannot grow, so the warm process is started with a blank argument that reserves room
(hpo.defaults.WARM_TITLE_BYTES). Best effort: where /proc/self/mem cannot be written,
the title stays as it was.
"""

from __future__ import annotations


def set_title(title: str) -> bool:
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # Fields 48 and 49 of proc(5) (arg_start, arg_end); the split starts at field 3.
        start, end = int(fields[45]), int(fields[46])
        size = end - start
        data = title.encode(errors="replace")[:size - 1] + b"\0"
        data += b" " * (size - len(data))  # the last byte not NUL: see above
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(data)
        return True
    except (OSError, IndexError, ValueError):
        return False
