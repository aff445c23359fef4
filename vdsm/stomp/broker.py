"""Destinations and subscriptions: who receives a MESSAGE sent to a destination.

Matching is hierarchical on '.', as VDSM's: a subscription to `jms.topic` receives
messages sent to `jms.topic` and to `jms.topic.anything`. Subscriptions belong to a
connection and vanish with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from vdsm.stomp.frames import encode


@dataclass
class Subscription:
    conn_id: int
    sub_id: str
    destination: str
    ack: str
    send: Callable[[bytes], None]


def matches(subscribed: str, destination: str) -> bool:
    return destination == subscribed or destination.startswith(subscribed + ".")


class Broker:
    def __init__(self) -> None:
        self._subs: dict[tuple[int, str], Subscription] = {}
        self._msg_ids = itertools.count(1)

    def subscribe(self, sub: Subscription) -> bool:
        """Add `sub`; False if that connection already uses the id."""
        key = (sub.conn_id, sub.sub_id)
        if key in self._subs:
            return False
        self._subs[key] = sub
        return True

    def unsubscribe(self, conn_id: int, sub_id: str) -> bool:
        return self._subs.pop((conn_id, sub_id), None) is not None

    def drop_connection(self, conn_id: int) -> None:
        for key in [k for k in self._subs if k[0] == conn_id]:
            del self._subs[key]

    def subscribers(self, destination: str) -> list[Subscription]:
        return [s for s in self._subs.values() if matches(s.destination, destination)]

    def publish(self, destination: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        """Send MESSAGE frames to every matching subscription; return how many."""
        subs = self.subscribers(destination)
        for sub in subs:
            hdrs = {"destination": destination, "content-type": "application/json",
                    "subscription": sub.sub_id, "message-id": str(next(self._msg_ids)),
                    "content-length": len(body)}
            if headers:
                hdrs.update(headers)
            sub.send(encode("MESSAGE", hdrs, body))
        return len(subs)
