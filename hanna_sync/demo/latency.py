"""A TCP proxy on 127.0.0.1 that puts a mail server at network distance, and counts what crosses it.

Why: on loopback a round trip costs nothing, so neither a benchmark nor a test can see the cost that
dominates in the field (Gmail and Office 365 answer in 20-150 ms). The proxy delays each direction by half
the round-trip time, and a new connection by a whole one (the TCP handshake the client would wait for),
and counts per connection the bytes each way and the client's round trips: 1 for the handshake, plus 1 each
time the client acts (sends, or closes) after hearing from the server since it last acted. So pipelined
commands cost one, a LOGOUT written without reading its answer costs one, and a client that waits for
every answer pays one per command.

    with LatencyProxy("127.0.0.1", dovecot.imaps_port, rtt_ms=50) as proxy:
        ... connect to 127.0.0.1:proxy.port ...
    proxy.connections[0].round_trips
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field


@dataclass
class ConnectionStats:
    """One proxied connection, as the proxy saw it."""

    round_trips: int = 1  # the TCP handshake
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client
    closed: bool = False
    _heard: bool = field(default=False, repr=False)  # server data forwarded since the client last acted

    def client_acts(self) -> None:
        if self._heard:
            self.round_trips += 1
            self._heard = False


class LatencyProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`, `rtt_ms` apart (0: no delay, still counting).

    Runs its own event loop in a thread, so blocking clients (imaplib, the CLI in a subprocess) use it as they
    would a server. Order is kept per direction; delays overlap (a stream of chunks costs one delay, as on a
    real link), they do not add up.
    """

    def __init__(self, target_host: str, target_port: int, *, rtt_ms: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay = rtt_ms / 2000.0
        self.connections: list[ConnectionStats] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> LatencyProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = started.result(10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # finished before the loop closes under them

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def reset(self) -> None:
        """Forget the connections counted so far (between a warm-up and the measured run)."""
        with self._lock:
            self.connections.clear()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every connection so far has closed, so its counts are final."""
        deadline = time.monotonic() + timeout
        while any(not c.closed for c in list(self.connections)):
            if time.monotonic() > deadline:
                raise TimeoutError("a proxied connection is still open")
            time.sleep(0.005)

    @property
    def round_trips(self) -> int:
        with self._lock:
            return sum(c.round_trips for c in self.connections)

    @property
    def bytes_down(self) -> int:
        with self._lock:
            return sum(c.bytes_down for c in self.connections)

    @property
    def bytes_up(self) -> int:
        with self._lock:
            return sum(c.bytes_up for c in self.connections)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=4096)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        stats = ConnectionStats()
        with self._lock:
            self.connections.append(stats)
        try:
            if self.delay:
                await asyncio.sleep(2 * self.delay)  # the handshake's round trip
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        up = asyncio.create_task(self._pipe(client_r, server_w, stats, upward=True))
        down = asyncio.create_task(self._pipe(server_r, client_w, stats, upward=False))
        try:
            await asyncio.gather(up, down)
        except asyncio.CancelledError:
            up.cancel()
            down.cancel()
        finally:
            stats.closed = True
            for w in (client_w, server_w):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: ConnectionStats,
                    *, upward: bool) -> None:
        """Copy one direction, each chunk delivered `delay` after it arrived; EOF passed on the same way."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                if not upward:
                    stats._heard = True
                try:
                    writer.write(data)
                    await writer.drain()
                except ConnectionError:  # the other side is gone (a client that closed after its LOGOUT)
                    return

        sender = asyncio.create_task(deliver())
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    data = b""
                if upward:
                    stats.client_acts()
                    stats.bytes_up += len(data)
                else:
                    stats.bytes_down += len(data)
                queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
        except asyncio.CancelledError:
            sender.cancel()
            raise
