"""A TCP proxy between the collector (or flusher) and the test PostgreSQL that fails on demand.

Point PGHOST/PGPORT at `proxy.env()`. It forwards bytes untouched (the SSLRequest, the startup,
every message) and can:

- `drop_all()`: close every open connection at once (both sides), as a network cut would;
  with `refuse=True`, also close every new connection as soon as it is accepted, until
  `refuse_new(False)`;
- `arm_commit("fail", nth=N)`: on the Nth COMMIT from now, when the server's CommandComplete
  for it (b"C" + int32 length 11 + b"COMMIT\\0") goes back to the client, close both sides
  without forwarding it: the server has committed, the client gets an error;
- `arm_commit("hold", nth=N)`: the same COMMIT reply is held back (not forwarded) and
  `commit_intercepted` is set, so the test can kill the client while it waits for it;
  `release()` then closes both sides.
"""

from __future__ import annotations

import contextlib
import socket
import threading

COMMIT_COMPLETE = b"C\x00\x00\x00\x0bCOMMIT\x00"


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket):
        self.client = client
        self.server = server
        self.closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class PgProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._refuse = False
        self._commit_action: str | None = None
        self._commit_countdown = 0
        self.commits_seen = 0
        self.connections_accepted = 0
        self.commit_intercepted = threading.Event()
        self._released = threading.Event()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="pg-proxy-accept",
                                               daemon=True)
        self._accept_thread.start()

    # -- configuration ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port)}

    def refuse_new(self, refuse: bool = True) -> None:
        with self._lock:
            self._refuse = refuse

    def drop_all(self, *, refuse: bool | None = None) -> int:
        """Close every open connection; returns how many there were."""
        with self._lock:
            if refuse is not None:
                self._refuse = refuse
            pairs = [pair for pair in self._pairs if not pair.closed]
            self._pairs = []
        for pair in pairs:
            pair.close()
        return len(pairs)

    def arm_commit(self, action: str = "fail", nth: int = 1) -> None:
        if action not in ("fail", "hold"):
            raise ValueError(f"unknown commit action {action!r}")
        if nth < 1:
            raise ValueError("nth counts from 1")
        with self._lock:
            self._commit_action = action
            self._commit_countdown = nth
            self.commit_intercepted.clear()
            self._released.clear()

    def release(self) -> None:
        """End a held COMMIT: both sides are closed, the reply is never delivered."""
        self._released.set()

    def close(self) -> None:
        self._closing = True
        self._released.set()
        # A blocked accept() is not woken by close() on Linux; a connection of our own does.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                    timeout=1):
            pass
        self._accept_thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_all()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- forwarding -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections_accepted += 1
                refuse = self._refuse
            if refuse or self._closing:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            pair = _Pair(client, server)
            with self._lock:
                self._pairs.append(pair)
            for target, name in ((self._client_to_server, "c2s"),
                                 (self._server_to_client, "s2c")):
                thread = threading.Thread(target=target, args=(pair,), daemon=True,
                                          name=f"pg-proxy-{name}")
                self._threads.append(thread)
                thread.start()

    def _client_to_server(self, pair: _Pair) -> None:
        try:
            while True:
                data = pair.client.recv(65536)
                if not data:
                    break
                pair.server.sendall(data)
        except OSError:
            pass
        finally:
            pair.close()

    def _commit_in(self, tail: bytes, data: bytes) -> bool:
        """Count the COMMIT replies in this chunk; True when the armed one is among them."""
        window = tail + data
        found = 0
        start = 0
        while True:
            at = window.find(COMMIT_COMPLETE, start)
            if at < 0:
                break
            # Only count matches that end inside the new data (the tail was counted before).
            if at + len(COMMIT_COMPLETE) > len(tail):
                found += 1
            start = at + 1
        if not found:
            return False
        with self._lock:
            self.commits_seen += found
            if self._commit_action is None:
                return False
            self._commit_countdown -= found
            return self._commit_countdown <= 0

    def _server_to_client(self, pair: _Pair) -> None:
        tail = b""
        try:
            while True:
                data = pair.server.recv(65536)
                if not data:
                    break
                if self._commit_in(tail, data):
                    with self._lock:
                        action, self._commit_action = self._commit_action, None
                    self.commit_intercepted.set()
                    if action == "hold":
                        self._released.wait()
                    break  # the reply is never forwarded; both sides close below
                pair.client.sendall(data)
                tail = (tail + data)[-(len(COMMIT_COMPLETE) - 1):]
        except OSError:
            pass
        finally:
            pair.close()
