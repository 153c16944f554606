"""The embedded redis-server."""
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from serving.connection import RedisUnavailable, connect, ping_or_raise
from serving.embedded import EmbeddedRedis, EmbeddedRedisError, ensure_running, pid_alive
from tests.serving.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_start_stop_and_data_kept_across_a_restart(spare_server):
    assert not spare_server.is_running()
    spare_server.start()
    assert spare_server.is_running() and spare_server.pid()
    assert spare_server.start() is spare_server                # already running: no-op
    connect(spare_server.url).set("k", b"v")
    spare_server.stop()                                          # SHUTDOWN SAVE
    assert not spare_server.is_running() and spare_server.pid() is None
    spare_server.start()
    assert connect(spare_server.url).get("k") == b"v"
    spare_server.stop(save=False)
    spare_server.stop()                                          # not running: no-op
    assert sorted(p.name for p in Path(spare_server.data_dir).iterdir()) == ["dump.rdb", "redis.conf", "redis.log"]


def test_server_outlives_the_process_that_started_it(tmp_path):
    port = free_port()
    code = f"from serving.embedded import EmbeddedRedis; EmbeddedRedis({str(tmp_path)!r}, {port}).start()"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   check=True, timeout=30)
    server = EmbeddedRedis(str(tmp_path), port)
    try:
        assert server.is_running()
        pid = server.pid()
        assert pid and pid_alive(pid)
    finally:
        server.stop(save=False)
    assert not server.is_running() and not pid_alive(pid)


def test_ensure_running_starts_once_and_only_locally(tmp_path):
    url = f"redis://localhost:{free_port()}/0"
    server = ensure_running(url, str(tmp_path / "r"))
    try:
        assert ensure_running(url, str(tmp_path / "r")).pid() == server.pid()
        ping_or_raise(connect(url), url)
        with pytest.raises(EmbeddedRedisError, match="not the one started from"):
            EmbeddedRedis(str(tmp_path / "elsewhere"), server.port).stop()   # someone else's server: left alone
        assert server.is_running()
    finally:
        server.stop(save=False)
    with pytest.raises(EmbeddedRedisError, match="not this machine; .*set redis.embedded: false"):
        ensure_running("redis://cache.example.com:6379/0", str(tmp_path / "x"))


def test_port_taken_by_something_else_is_a_clear_error(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer_http():
        conn, _ = listener.accept()
        with conn:
            conn.recv(100)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_http, daemon=True).start()
    with pytest.raises(EmbeddedRedisError, match="taken by a program that is not redis-server"):
        EmbeddedRedis(str(tmp_path), listener.getsockname()[1]).start()
    listener.close()


def test_password_protected_server(tmp_path):
    server = EmbeddedRedis(str(tmp_path), free_port(), password="s3cret").start()
    try:
        assert stat.S_IMODE(os.stat(server.conf_file).st_mode) == 0o600
        with pytest.raises(RedisUnavailable, match="needs a password|set REDIS_PASSWORD"):
            ping_or_raise(connect(server.url))
        ping_or_raise(connect(server.url, password="s3cret"))
        assert not EmbeddedRedis(str(tmp_path), server.port).is_running()  # no password: no PONG
    finally:
        server.stop(save=False)
    assert not server.is_running()
