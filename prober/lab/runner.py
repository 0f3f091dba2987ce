"""Run lab servers on an asyncio loop in a background thread.

Tests are both sync and async, and the code under test runs its own loop
(``asyncio.run``) in the main thread.  The lab servers therefore live on a
loop of their own in a daemon thread::

    with LabLoop() as lab:
        dns = lab.start(DnsServer())
        web = lab.start(TlsHttpServer(certfile, keyfile))
        ...                      # probe 127.0.0.1:dns.port, web.port
    # every server stopped, every connection closed, the thread joined

``TcpService`` is the listener the servers share: it tracks every accepted
connection so that ``close()`` ends even a hung one at once (asyncio's own
``Server.close`` in 3.11 leaves accepted connections open).
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

# Loop iterations from an accept to the connection's handler running: accept task,
# connection_made, handler's first step; with room to spare.
_SETTLE_STEPS = 8

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LabServer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=LabServer)
T = TypeVar("T")


def hostport(host: str, port: int) -> str:
    """'127.0.0.1:53', or '[::1]:53' for IPv6."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TcpService:
    """An asyncio TCP listener whose close() also closes every open connection."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.port = 0

    async def listen(self, host: str, port: int) -> int:
        """Bind and listen; return the bound port.  Raises OSError when the port is taken."""
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:  # accepted by the kernel just before close(): end it now
            abort(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        # Forget connections that are closed and flushed; keep the rest for close().
        self._writers = {w for w in self._writers if _still_open(w)}
        self._writers.add(writer)
        try:
            await self._handler(reader, writer)
        except (OSError, EOFError, asyncio.IncompleteReadError):
            pass  # the client went away: normal for a lab server facing a prober with deadlines
        except asyncio.CancelledError:
            # close() cancelled us.  End normally: asyncio 3.11's stream callback calls
            # task.exception(), which raises (and logs a traceback) on a cancelled task.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()  # close, not abort: what is buffered still goes out, then FIN

    async def close(self) -> None:
        """Stop listening and end every connection, hung or not.  Idempotent."""
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            await _stop_accepting(server)
        for writer in list(self._writers):
            abort(writer)  # abort, not close: a peer that never reads must not hold us
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()


async def _stop_accepting(server: asyncio.Server) -> None:
    """Close a listener without leaking a connection it accepted a moment ago.

    asyncio accepts in one step and builds the transport in a task a step
    later; Server.close() in between makes that task fail an assertion and
    leave the accepted socket open (the client hangs).  So: stop accepting,
    let those tasks finish (each connection then reaches _serve, sees
    _closed and is aborted), and only then close.  Connections still in the
    kernel's queue are reset when the listening socket closes.
    """
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    for _ in range(_SETTLE_STEPS):
        await asyncio.sleep(0)
    server.close()


def abort(writer: asyncio.StreamWriter) -> None:
    """End a connection now, dropping what is buffered.

    A TLS transport closed twice has let go of its SSL protocol; early 3.11
    releases (Debian 12 ships 3.11.2; 3.11.7 checks for it) then dereference
    None in abort() and raise AttributeError.  That connection is already gone.
    """
    try:
        writer.transport.abort()
    except AttributeError:
        pass


def _still_open(writer: asyncio.StreamWriter) -> bool:
    """Open, or closing with bytes still to flush.  A closed TLS transport raises on the buffer
    query (its SSL protocol is gone), and counts as done."""
    transport = writer.transport
    if not transport.is_closing():
        return True
    try:
        return bool(transport.get_write_buffer_size())
    except (AttributeError, RuntimeError):
        return False


class LabLoop:
    """An asyncio loop in a daemon thread that starts and stops lab servers."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._servers: list[LabServer] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lab-loop", daemon=True)
        self._thread.start()
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the lab loop and wait for its result."""
        if self._closed:
            coro.close()
            raise RuntimeError("this LabLoop is stopped; make a new one")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except TimeoutError:
            future.cancel()  # do not leave it running behind the caller's back
            raise

    def start(self, server: S) -> S:
        """Start a server on the lab loop; it is stopped by stop().  Returns the server."""
        self.run(server.start())
        self._servers.append(server)
        return server

    def stop(self) -> None:
        """Stop every server (last started first), then the loop and its thread.  Idempotent."""
        if self._closed:
            return
        errors: list[BaseException] = []
        try:
            while self._servers:
                try:
                    self.run(self._servers.pop().stop())
                except Exception as e:  # stop the others all the same, then report the first
                    errors.append(e)
            if errors:
                raise errors[0]
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.timeout)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> LabLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
