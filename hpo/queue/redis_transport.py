"""kombu's Redis transport, made safe against entries that are not kombu messages (see
``hpo.queue.messages``); installed under the ``redis`` and ``rediss`` aliases."""

from __future__ import annotations

from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

from hpo.queue.messages import dropped, envelope_is_sound, preview


class Channel(kombu_redis.Channel):
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
