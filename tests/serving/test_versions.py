"""The publish lock (heartbeat, takeover of a gone owner) and the switch of readers, against a real
redis-server."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest
import redis

from serving import lock_owner
from serving.keys import KeySpace
from serving.publish import PublishError, publish_version
from serving.publish_lock import PublishLock
from serving.switch import mark_current
from serving.versions import list_versions
from tests.serving.records import chunks, expected

META = {"model_version": "3", "run_id": "run-1"}
THIEF = json.dumps({"host": "other-host", "pid": 1, "token": "thief"})


def publish(r, ks, version, records=None, **kw):
    return publish_version(r, ks, version, chunks(version) if records is None else records, META,
                           expected=expected(), **kw)


def data_keys(r, ks, version):
    return [k for k in r.scan_iter(match=ks.version_pattern(version)) if not k.endswith(b":meta")]


def heartbeats():
    return [t for t in threading.enumerate() if t.name.startswith("publish-lock-heartbeat")]


def after_a_pause(tag, pause_s, first=None):
    """The chunks of ``tag``, the first one ``pause_s`` seconds late (a Spark shuffle before it);
    ``first()`` runs as the wait begins."""
    if first is not None:
        first()
    time.sleep(pause_s)
    yield from chunks(tag)


# ---- the lock lives as long as the publish (issue 22, defect 4) -------------------------------------

def test_a_first_chunk_slower_than_the_lock_ttl_keeps_the_lock(r, ks):
    publish(r, ks, "v1")
    res = publish(r, ks, "v2", after_a_pause("v2", 3.0), lock_ttl=1.0)   # 3 ttls before the first chunk
    assert (res.skipped, res.previous_version, r.get(ks.current)) == (False, "v1", b"v2")
    assert r.get(ks.publish_lock) is None                               # released
    assert heartbeats() == []                                           # and its heartbeat stopped


def test_a_lock_taken_over_while_the_first_chunk_computes_stops_before_writing(r, ks):
    publish(r, ks, "v1")

    def steal():                   # another publisher takes the key (say our ttl lapsed in a Redis outage)
        r.set(ks.publish_lock, THIEF, px=60_000)

    with pytest.raises(PublishError, match="lost the publish lock reco:publish_lock"):
        publish(r, ks, "v2", after_a_pause("v2", 1.5, first=steal), lock_ttl=0.6)
    assert r.get(ks.current) == b"v1"                                   # never switched
    assert data_keys(r, ks, "v2") == []                                 # nothing written under another's lock
    assert r.get(ks.publish_lock) == THIEF.encode()                     # and the other's lock left alone
    assert heartbeats() == []


def test_a_lock_taken_over_after_the_last_chunk_stops_before_switching(r, ks):
    publish(r, ks, "v1")

    def verify(r_, ks_, version):  # runs after loading, before the switch
        r.set(ks.publish_lock, THIEF, px=60_000)

    with pytest.raises(PublishError, match="lost the publish lock"):
        publish(r, ks, "v2", verify_fn=verify)
    assert r.get(ks.current) == b"v1"
    assert r.get(ks.publish_lock) == THIEF.encode()


def test_the_heartbeat_uses_a_connection_of_its_own(r, ks, redis_server):
    """A single-connection client (commands on one socket) publishes with a heartbeat beating
    every 0.1 s: their replies never mix."""
    single = redis.Redis.from_url(redis_server, single_connection_client=True)
    try:
        res = publish(single, ks, "v1", after_a_pause("v1", 0.5), lock_ttl=0.3)
        assert (res.keys_written, single.get(ks.current)) == (92, b"v1")
    finally:
        single.close()


# ---- takeover only of an owner surely gone from this pid namespace (issue 22, defect 9d) ------------

def _proc_start(pid):
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19]


def _owner(**fields):
    """An owner record as this process would write it, with ``fields`` changed."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "pidns": os.readlink("/proc/self/ns/pid"),
          "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(), "start": _proc_start(os.getpid()),
          "token": "t"}
    return json.dumps({**me, **fields}).encode()


@pytest.fixture
def pids():
    """(a live pid and its start time, a pid that is gone): children of this test."""
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        yield live.pid, _proc_start(live.pid), dead.pid
    finally:
        live.kill()
        live.wait()


def test_an_owner_in_another_pid_namespace_is_never_taken_for_gone(r, ks, pids):
    live, live_start, dead = pids
    stale = PublishLock(r, ks, "test")._stale
    other_ns = "pid:[4026500001]"
    # another container with the same host name: its pid numbers are not ours
    assert not stale(_owner(pidns=other_ns))                            # the same pid as ours (pid 1 in both)
    assert not stale(_owner(pidns=other_ns, pid=dead, start="1"))       # a pid free here, maybe not there
    assert not stale(_owner(pidns=other_ns, pid=live, start=live_start))
    assert not stale(_owner(boot_id="00000000-0000-0000-0000-000000000000", pid=dead, start="1"))  # before a reboot
    # a record that cannot tell (written without a pid namespace): wait for the expiry
    assert not stale(json.dumps({"host": socket.gethostname(), "pid": dead, "token": "t"}).encode())


def test_an_owner_of_this_pid_namespace_is_gone_when_its_pid_is_free_or_reused(r, ks, pids):
    live, live_start, dead = pids
    stale = PublishLock(r, ks, "test")._stale
    assert stale(_owner(pid=dead, start="12345"))                       # a killed publish: take over at once
    assert not stale(_owner(pid=live, start=live_start))                # it still runs: wait
    assert stale(_owner(pid=live, start=str(int(live_start) - 1)))      # the pid now names a later process
    assert stale(_owner())                                              # this very process


def test_without_proc_nothing_is_taken_over(r, ks, pids, tmp_path, monkeypatch):
    live, live_start, dead = pids
    owner = _owner(pid=dead, start="12345")
    monkeypatch.setattr(lock_owner, "PROC", tmp_path / "no-proc")
    lock = PublishLock(r, ks, "test")
    assert json.loads(lock.value)["pidns"] is None
    assert not lock._stale(owner)


def test_a_live_lock_of_another_container_with_our_host_name_and_pid_is_waited_for(r, ks):
    r.set(ks.publish_lock, _owner(pidns="pid:[4026500001]", token="theirs"), px=60_000)
    with pytest.raises(PublishError, match="another publish holds the lock reco:publish_lock"):
        publish(r, ks, "v1")
    assert r.get(ks.current) is None and json.loads(r.get(ks.publish_lock))["token"] == "theirs"


# ---- the switch is all or nothing (issue 22, defect 9c) ---------------------------------------------

class _Crash(Exception):
    """The process dies: nothing more reaches Redis."""


def _dying_client(url, sends):
    """A client whose process dies at its ``sends``-th write to Redis from now on."""
    budget = [None]

    class DyingConnection(redis.Connection):
        def send_packed_command(self, command, check_health=True):
            if budget[0] is not None:
                if budget[0] <= 0:
                    raise _Crash()
                budget[0] -= 1
            super().send_packed_command(command, check_health)

    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, connection_class=DyingConnection))
    client.ping()                  # the handshake's writes do not count
    budget[0] = sends
    return client


@pytest.mark.parametrize("sends", range(6))
def test_a_crash_inside_the_switch_never_leaves_the_live_version_unlisted(r, redis_server, sends):
    ks = KeySpace(f"crash{sends}", n_shards=4)
    for v in ("A", "B", "C"):
        publish(r, ks, v)                                   # readers on C; B and A kept for rollback
    dying = _dying_client(redis_server, sends)
    try:
        mark_current(dying, ks, "B")                        # e.g. republishing B's lists ...
    except _Crash:
        pass                                                # ... and the process dies somewhere inside
    finally:
        dying.close()
    live = r.get(ks.current).decode()
    assert live in ("C", "B")
    assert live in [v.decode() for v in r.lrange(ks.versions, 0, -1)], r.lrange(ks.versions, 0, -1)
    # the next publish must keep the version readers were on until then (its rollback target)
    res = publish(r, ks, "D")
    assert res.previous_version == live
    assert {v["version"]: v["status"] for v in list_versions(r, ks)}[live] == "complete"
    assert data_keys(r, ks, live)


def test_the_switch_lists_the_version_once_at_the_head(r, ks):
    for v in ("A", "B", "C"):
        publish(r, ks, v)
    r.lpush(ks.rolled_back, "B")
    mark_current(r, ks, "B")
    assert (r.get(ks.current), r.lrange(ks.versions, 0, -1)) == (b"B", [b"B", b"C", b"A"])
    assert r.lrange(ks.rolled_back, 0, -1) == []
    mark_current(r, ks, "D")                                # not listed before
    assert r.lrange(ks.versions, 0, -1) == [b"D", b"B", b"C", b"A"]
