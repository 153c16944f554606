"""Many lookups' GETs on one Redis connection, pipelined: the lookup service's hot path.

A lookup needs one thing from Redis: "GET these keys, in one round trip". ``redis.asyncio`` does
it with a connection taken from its pool, a timeout and a retry policy around every read and its
own reply objects; at 2,000 lookups per second that was about 40% of the service's CPU (py-spy,
docs/SERVING.md). Redis answers each connection's commands in the order they came, so concurrent
lookups can share one connection: each writes its packed GETs and waits on a future, and the
replies, parsed by hiredis as they arrive, complete the futures in the order they were sent.

What a caller sees is what the redis-py client gave:

* Redis down, the connection refused, reset or closed: :class:`redis.ConnectionError` (the
  service's 503) for every lookup waiting on that connection. A lookup whose *established*
  connection was lost is sent once more on a new one (a GET is safe to repeat); one that cannot
  connect fails at once.
* No reply within ``timeout``: :class:`redis.TimeoutError` for every lookup waiting, and the
  connection is closed (a late reply must never be taken for a later lookup's). So is no reply
  to AUTH or SELECT within ``connect_timeout`` (never the built-in ``TimeoutError``).
* A refused password or database: :class:`redis.AuthenticationError` /
  :class:`redis.ResponseError` naming the server.
* An error reply to a GET (a key of another type): :meth:`PipelinedGets.get_many` returns None and
  the caller reads through redis-py, which raises it as it always did.

Plain TCP only (``redis://``, with a password and a database); :meth:`PipelinedGets.for_client`
returns None for TLS, Unix sockets, RESP3 or a credential provider, and those clients keep
redis-py's pipeline.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, List, Optional, Sequence

import hiredis
import redis
import redis.asyncio as aredis

from serving.embedded import pack_command

# at most this often (seconds) the oldest waiting lookup's age is checked against the timeout
_WATCH_S = 0.1


def pack_gets(keys: Sequence[str]) -> bytes:
    """``GET key`` for each key, as redis-py packs it (keys in UTF-8): :func:`pack_command`'s bytes,
    written out for the hot path."""
    out = []
    for key in keys:
        raw = key.encode("utf-8")
        out.append(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Connection(asyncio.Protocol):
    """One connection: requests in the order they were written, each completed by its replies."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.loop = asyncio.get_running_loop()
        self.transport: Optional[asyncio.Transport] = None
        self.reader = hiredis.Reader()          # replies as bytes / None; error replies as ReplyError
        self.pending: collections.deque = collections.deque()   # [future, replies, n, sent at]
        self.out: List[bytes] = []              # requests of this loop iteration, not written yet
        self.failed: Optional[Exception] = None

    @property
    def usable(self) -> bool:
        return self.failed is None and self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport              # type: ignore[assignment]

    def request(self, packed: bytes, n: int) -> asyncio.Future:
        """Send ``packed`` (``n`` commands); the future gets their ``n`` replies, in order.

        The requests of one event-loop iteration go out in one write, at its end: under load many
        lookups share a system call (one write each was a tenth of the service's CPU)."""
        fut = self.loop.create_future()
        self.pending.append([fut, [], n, self.loop.time()])
        self.out.append(packed)
        if len(self.out) == 1:
            self.loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        if self.usable:                         # else fail() has failed every request waiting
            self.transport.write(b"".join(self.out))   # type: ignore[union-attr]
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as e:
                self.fail(redis.ConnectionError(f"Redis at {self.where} sent what is not the Redis protocol: {e}"))
                return
            if reply is False:                  # no complete reply yet
                return
            if not pending:
                self.fail(redis.ConnectionError(f"Redis at {self.where} sent a reply to nothing asked"))
                return
            entry = pending[0]
            entry[1].append(reply)
            if len(entry[1]) == entry[2]:
                pending.popleft()
                if not entry[0].done():         # a cancelled lookup's replies are read and dropped
                    entry[0].set_result(entry[1])

    def connection_lost(self, exc: Optional[Exception]) -> None:
        why = f": {exc}" if exc else " (closed by the server)"
        self.fail(redis.ConnectionError(f"lost the connection to Redis at {self.where}{why}"))

    def fail(self, error: Exception) -> None:
        """Fail every waiting request with ``error`` and close: nothing more is read from this stream."""
        if self.failed is None:
            self.failed = error
        while self.pending:
            fut = self.pending.popleft()[0]
            if not fut.done():
                fut.set_exception(error)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def overdue(self, now: float, timeout: float) -> bool:
        return bool(self.pending) and now - self.pending[0][3] > timeout


class PipelinedGets:
    """GETs of many concurrent callers on one lazily opened connection (see the module's docstring).

    Args:
        host, port, db, username, password: the server, as in a ``redis://`` URL.
        timeout: seconds a request may wait for its replies.
        connect_timeout: seconds to open the connection (and authenticate).
    """

    def __init__(self, host: str = "localhost", port: int = 6379, db: int = 0, username: Optional[str] = None,
                 password: Optional[str] = None, timeout: float = 1.0, connect_timeout: Optional[float] = None) -> None:
        self.host, self.port, self.db = host, int(port), int(db or 0)
        self.username, self.password = username, password
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout or timeout)
        self.where = f"{host}:{port}"
        self._conn: Optional[_Connection] = None
        self._lock: Optional[asyncio.Lock] = None
        self._watch: Optional[asyncio.TimerHandle] = None

    @classmethod
    def for_client(cls, r: Any) -> Optional["PipelinedGets"]:
        """The pipelined reader of ``r``'s server, or None where ``r`` is not a plain-TCP
        ``redis.asyncio.Redis`` this reader can stand in for."""
        if not isinstance(r, aredis.Redis):
            return None
        pool = r.connection_pool
        kw = pool.connection_kwargs
        if pool.connection_class is not aredis.Connection or kw.get("credential_provider") is not None \
                or str(kw.get("protocol") or 2) != "2":
            return None
        return cls(kw.get("host", "localhost"), kw.get("port", 6379), kw.get("db", 0), kw.get("username"),
                   kw.get("password"), timeout=kw.get("socket_timeout") or 1.0,
                   connect_timeout=kw.get("socket_connect_timeout"))

    async def get_many(self, keys: Sequence[str]) -> Optional[List[Optional[bytes]]]:
        """Each key's value (None: no such key), in one round trip; None when a reply was an error."""
        if not keys:
            return []
        packed = pack_gets(keys)
        for attempt in (1, 2):
            conn = self._conn if self._conn is not None and self._conn.usable else await self._connect()
            try:
                values = await conn.request(packed, len(keys))
                break
            except redis.TimeoutError:
                raise
            except redis.ConnectionError:
                if attempt == 2:
                    raise
        if any(isinstance(v, hiredis.ReplyError) for v in values):
            return None
        return values

    async def _connect(self) -> _Connection:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:                  # one connection, however many lookups wait for it
            if self._conn is not None and self._conn.usable:
                return self._conn
            loop = asyncio.get_running_loop()
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _Connection(self.where), self.host, self.port),
                    self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                raise redis.ConnectionError(f"cannot connect to Redis at {self.where}: "
                                            f"{e or 'no answer within %.1f s' % self.connect_timeout}") from None
            try:
                await self._hello(conn)
            except BaseException:
                conn.fail(redis.ConnectionError(f"connection to Redis at {self.where} abandoned"))
                raise
            self._conn = conn
            if self._watch is None:
                self._watch = loop.call_later(_WATCH_S, self._check)
            return conn

    async def _hello(self, conn: _Connection) -> None:
        """AUTH and SELECT, where the URL asks for them."""
        if self.password is not None:
            auth = ["AUTH", *([self.username] if self.username else []), self.password]
            reply = await self._ask(conn, "AUTH", auth)
            if isinstance(reply, hiredis.ReplyError):
                raise redis.AuthenticationError(f"Redis at {self.where} refused the credentials: {reply}")
        if self.db:
            reply = await self._ask(conn, "SELECT", ["SELECT", str(self.db)])
            if isinstance(reply, hiredis.ReplyError):
                error = redis.AuthenticationError if str(reply).startswith(("NOAUTH", "WRONGPASS")) \
                    else redis.ResponseError
                raise error(f"Redis at {self.where} refused database {self.db}: {reply}")

    async def _ask(self, conn: _Connection, what: str, command: List[str]) -> Any:
        """One command's reply within ``connect_timeout``, else :class:`redis.TimeoutError` (the
        service's 503, as for a lookup that waits too long; ``asyncio.wait_for``'s own TimeoutError is
        the built-in one, which callers of redis-py do not expect)."""
        try:
            [reply] = await asyncio.wait_for(conn.request(pack_command(*command), 1), self.connect_timeout)
        except asyncio.TimeoutError:
            raise redis.TimeoutError(f"Redis at {self.where} did not answer {what} within "
                                     f"{self.connect_timeout:g} s") from None
        return reply

    def _check(self) -> None:
        """Fail the connection when its oldest request waited longer than the timeout."""
        conn = self._conn
        loop = asyncio.get_running_loop()
        if conn is not None and conn.usable and conn.overdue(loop.time(), self.timeout):
            conn.fail(redis.TimeoutError(f"Redis at {self.where} did not answer within {self.timeout:g} s"))
        self._watch = loop.call_later(_WATCH_S, self._check)

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._conn is not None:
            self._conn.fail(redis.ConnectionError(f"the reader of Redis at {self.where} was closed"))
            self._conn = None
