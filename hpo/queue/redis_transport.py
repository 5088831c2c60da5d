"""kombu's Redis transport, made safe against entries that are not kombu messages (see
``hpo.queue.messages``), with one kept Redis client per channel; installed under the
``redis`` and ``rediss`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

from hpo.queue.messages import dropped, envelope_is_sound, preview


class Channel(kombu_redis.Channel):
    _kept_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        # kombu makes a new redis.Redis for every publish, ack and event, and redis-py
        # builds each one's table of ~170 reply callbacks: about half a millisecond of
        # CPU a message. A client is a thin, thread-safe front of the channel's
        # connection pool (a command takes a connection from the pool and gives it
        # back), so one kept client serves them all: the client of the channel's pool
        # now (kombu drops its pools after a fork or a failed ping and makes new ones).
        if client:
            yield client
            return
        kept = self._kept_client
        if kept is None or kept.connection_pool is not self.pool:
            kept = self._kept_client = self._create_client()
        yield kept

    def _brpop_read(self, **options: Any) -> Any:
        # kombu pops the entry and parses it as JSON before anything else sees it: an
        # entry that is not JSON raised out of the worker's loop ("Unrecoverable error:
        # JSONDecodeError"). A failure before our _deliver ran is that parse.
        transport = self.connection
        transport.delivering = False
        try:
            return super()._brpop_read(**options)
        except (Empty, *transport.connection_errors, *transport.channel_errors):
            raise
        except Exception as exc:
            if transport.delivering:
                raise
            dropped(f"not JSON ({exc}): {preview(getattr(exc, 'doc', None))}")
            return True


class Transport(kombu_redis.Transport):
    Channel = Channel
    delivering = False

    def _deliver(self, message: Any, queue: str) -> None:
        self.delivering = True
        if envelope_is_sound(message):
            super()._deliver(message, queue)
