"""hpo.wakeups: a waiter woken when what it waits for happens, instead of polling.

A writer *announces* a change (a task ended, a task reported) and a *listener* hears it
in another process, at once. Two ways, chosen by the resource:

* ``doorbell``: on one host, Unix datagram sockets in a folder beside a file (a SQLite
  store, the embedded broker's file); a ring is a datagram to every socket there.
* ``postgres``: ``NOTIFY`` in the writing transaction, delivered on its commit, heard by
  a connection that ``LISTEN``\\s.

``store`` picks one for a store by its dialect. A wake-up is only ever a hint: whoever
waits still looks now and then (a fallback period), so a wake-up that is lost (a full
socket buffer, a connection lost and reconnected) costs a delay, never a result.
"""

from hpo.wakeups.base import NOTIFY_PAYLOAD, Announcer, Listener, ListenerUnavailable, OnChange
from hpo.wakeups.doorbell import Doorbell, DoorbellListener, bell_folder
from hpo.wakeups.store import OnStoreChange, StoreChange, announcer_for, listen_to_store

__all__ = ["NOTIFY_PAYLOAD", "Announcer", "Doorbell", "DoorbellListener", "Listener",
           "ListenerUnavailable", "OnChange", "OnStoreChange", "StoreChange", "announcer_for",
           "bell_folder", "listen_to_store"]
