"""The channel between `prober serve --workers N` and each of its worker processes.

One Unix socketpair per worker, carrying pickled tuples with
``multiprocessing.connection``'s length framing: a request is
``(id, command, args)``, its answer ``(id, ok, value)``.  Both ends belong to
the same program (the parent starts the child with the socket's other end
inherited), so pickle is safe here; nothing from the network ever reaches it.

Requests may overlap (a scrape while a reload stages), so each side has one
reader thread, and sends are serialised by a lock.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("prober.service")

Handler = Callable[..., Any]


class LinkClosed(Exception):
    """The other end is gone (the worker exited, or the supervisor did)."""


class RemoteError(Exception):
    """The command failed on the other end: its one-line reason."""


class _Sender:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple) -> None:
        with self._lock:
            try:
                self.conn.send(message)
            except (OSError, EOFError, ValueError) as err:  # ValueError: the connection is closed
                raise LinkClosed(str(err)) from None


class Client(_Sender):
    """The supervisor's end: `call` sends a command and waits for its answer."""

    def __init__(self, conn: Connection, name: str) -> None:
        super().__init__(conn)
        self.name = name
        self._next = 0
        self._pending: dict[int, Future] = {}
        self._state = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name=f"prober-link-{name}", daemon=True)
        self._reader.start()

    def submit(self, command: str, *args: object) -> Future:
        """Send now; the future resolves to the answer (or raises RemoteError / LinkClosed)."""
        future: Future = Future()
        with self._state:
            if self._closed:
                raise LinkClosed(f"{self.name} is not running")
            self._next += 1
            ident = self._next
            self._pending[ident] = future
        try:
            self.send((ident, command, args))
        except LinkClosed:
            with self._state:
                self._pending.pop(ident, None)
            raise
        return future

    def call(self, command: str, *args: object, timeout: float) -> Any:
        return wait(self.submit(command, *args), timeout)

    def _read(self) -> None:
        try:
            while True:
                ident, ok, value = self.conn.recv()
                with self._state:
                    future = self._pending.pop(ident, None)
                if future is not None:
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(RemoteError(value))
        except (OSError, EOFError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        with self._state:
            self._closed = True
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(LinkClosed(f"{self.name} exited"))
        self.conn.close()


def wait(future: Future, timeout: float) -> Any:
    try:
        return future.result(timeout)
    except FutureTimeout:
        future.cancel()
        raise TimeoutError from None


class Server(_Sender):
    """A worker's end: each command runs `handlers[command](*args)` in a small thread pool."""

    def __init__(self, conn: Connection, handlers: dict[str, Handler], on_close: Callable[[], None]) -> None:
        super().__init__(conn)
        self._handlers = handlers
        self._on_close = on_close
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="prober-worker")
        self._reader = threading.Thread(target=self._read, name="prober-link", daemon=True)

    def start(self) -> None:
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                ident, command, args = self.conn.recv()
                self._pool.submit(self._answer, ident, command, args)
        except (OSError, EOFError):
            pass
        finally:
            self._on_close()  # the supervisor is gone: a worker never outlives it

    def _answer(self, ident: int, command: str, args: tuple) -> None:
        handler = self._handlers.get(command)
        try:
            if handler is None:
                raise RemoteError(f"unknown command {command!r}")
            message = (ident, True, handler(*args))
        except Exception as err:  # the answer carries the reason; the worker keeps running
            message = (ident, False, f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
        try:
            self.send(message)
        except LinkClosed:
            pass

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.conn.close()
