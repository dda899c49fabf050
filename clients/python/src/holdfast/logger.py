"""A background logger for request paths: `log()` puts the interaction on a bounded queue
and returns at once; a thread sends batches (by size or interval) and retries a batch that
failed as a whole with the same `client_key`s, so a retry stores nothing twice. `log()` never
raises into the caller and never blocks: when the queue is full the item is dropped and
counted."""

from __future__ import annotations

import atexit
import datetime as _dt
import logging
import queue
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import List, Optional

from holdfast.client import Client, HoldfastError, Interaction, Model

_log = logging.getLogger("holdfast")


@dataclass
class Counters:
    """What became of the logged items so far."""

    logged: int = 0  # accepted by log()
    stored: int = 0  # created or duplicate on the server
    rejected: int = 0  # refused by the server (invalid), not retried
    dropped: int = 0  # not accepted (queue full, or after shutdown) or given up at shutdown
    retries: int = 0  # batch sends retried


class Logger:
    """Sends interactions in the background.

    `batch_size` items or `interval` seconds, whichever comes first, make a batch. A batch
    that fails as a whole for a reason that can pass (server restarting, unreachable, disk
    full) is retried with backoff from `retry_initial` to `retry_max` seconds for as long as
    the logger runs; a batch refused for good (a wrong token) is counted as rejected and
    logged (never its content)."""

    def __init__(self, client: Optional[Client] = None, *, app: str = "",
                 max_queue: int = 10_000, batch_size: int = 100, interval: float = 1.0,
                 retry_initial: float = 0.1, retry_max: float = 5.0):
        self.client = client or Client()
        self.app = app
        self.batch_size = batch_size
        self.interval = interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.counters = Counters()
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Interaction]" = queue.Queue(maxsize=max_queue)
        self._pending = 0  # accepted and not yet stored, rejected or dropped
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._give_up_at: Optional[float] = None
        self._given_up = 0  # items given up at shutdown
        self._thread = threading.Thread(target=self._run, name="holdfast-logger", daemon=True)
        self._thread.start()
        _live.add(self)

    def log(self, mailbox_id: str = "", prompt: str = "", response: str = "", *,
            interaction: Optional[Interaction] = None, client_key: Optional[str] = None,
            thread_id: str = "", app: Optional[str] = None,
            created_at: Optional[_dt.datetime] = None, model: Optional[Model] = None,
            attributes: Optional[dict] = None) -> bool:
        """Queues one interaction; True when accepted. Never raises, never blocks."""
        try:
            if interaction is None:
                interaction = Interaction(
                    mailbox_id=mailbox_id,
                    client_key=client_key or uuid.uuid4().hex,
                    app=app if app is not None else self.app,
                    prompt=prompt,
                    response=response,
                    created_at=created_at or _dt.datetime.now(_dt.timezone.utc),
                    thread_id=thread_id,
                    model=model or Model(),
                    attributes=attributes or {},
                )
            if self._stopping.is_set():
                with self._lock:
                    self.counters.dropped += 1
                return False
            with self._lock:
                self._pending += 1
            try:
                self._queue.put_nowait(interaction)
            except queue.Full:
                with self._lock:
                    self._pending -= 1
                    self.counters.dropped += 1
                    self._idle.notify_all()
                return False
            with self._lock:
                self.counters.logged += 1
            return True
        except Exception:  # never into the caller's request
            with self._lock:
                self.counters.dropped += 1
            return False

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until everything logged so far is stored, rejected or dropped; False on
        timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining if remaining is not None else 1.0)
        return True

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stops taking items, sends what is queued (retrying within `timeout`), then stops.
        What could not be sent by then is counted as dropped. True when nothing was lost."""
        self._give_up_at = time.monotonic() + timeout
        self._stopping.set()
        self._thread.join(timeout + 1.0)
        _live.discard(self)
        with self._lock:
            return self._pending == 0 and self._given_up == 0

    # The sending thread.

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch:
                self._send(batch)
            elif self._stopping.is_set() and self._queue.empty():
                return

    def _next_batch(self) -> List[Interaction]:
        batch: List[Interaction] = []
        deadline = time.monotonic() + self.interval
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            if self._stopping.is_set():
                remaining = 0
            try:
                if remaining <= 0:
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _send(self, batch: List[Interaction]) -> None:
        delay = self.retry_initial
        while True:
            try:
                results = self.client.ingest(batch)
                stored = sum(1 for r in results if r.stored)
                self._settle(stored=stored, rejected=len(batch) - stored)
                for result in results:
                    if not result.stored:
                        _log.warning("holdfast rejected an interaction: %s %s %s",
                                     result.code, result.field, result.reason)
                return
            except HoldfastError as error:
                if not error.retryable:
                    _log.error("holdfast refused a batch of %d: %s", len(batch), error)
                    self._settle(rejected=len(batch))
                    return
                reason = str(error)
            except Exception as error:  # a bug or an unexpected transport error: retry
                reason = type(error).__name__
            if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                _log.error("holdfast logger gave up %d items at shutdown: %s", len(batch), reason)
                with self._lock:
                    self._given_up += len(batch)
                self._settle(dropped=len(batch))
                return
            with self._lock:
                self.counters.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    def _settle(self, stored: int = 0, rejected: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self.counters.stored += stored
            self.counters.rejected += rejected
            self.counters.dropped += dropped
            self._pending -= stored + rejected + dropped
            self._idle.notify_all()


_live: "weakref.WeakSet[Logger]" = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for logger in list(_live):
        logger.shutdown(timeout=5.0)
