"""Versioned all-or-nothing publishing against a real redis-server."""

import pytest

from serving.client import LookupClient
from serving.codec import encode_list
from serving.connection import connect
from serving.publish import (PublishError, delete_version, list_versions, publish_version, rollback)
from tests.serving.records import chunks, expected, kill_midway

META = {"model_version": "3", "run_id": "run-1", "run_date": "2026-11-26"}


def keys_of(r, ks, version):
    return sorted(k.decode() for k in r.scan_iter(match=ks.version_pattern(version), count=1000))


def publish(r, ks, version, tag=None, **kw):
    kw.setdefault("expected", expected())
    return publish_version(r, ks, version, chunks(tag or version), META, **kw)


def test_publish_then_lookup_answers_from_the_new_version(r, ks):
    res = publish(r, ks, "v1")
    assert (res.skipped, res.previous_version, res.keys_written) == (False, None, 92)
    assert res.counts == {"u": 50, "s": 20, "i": 20, "f": 2}
    assert len(keys_of(r, ks, "v1")) == 92 + 1                      # + metadata hash
    c = LookupClient(r, ks)
    own = c.recommendations("u3", k=3)
    assert (own.items, own.source, own.fallback, own.version) == (["v1-u3-i0", "v1-u3-i1", "v1-u3-i2"],
                                                                 "personal", False, "v1")
    assert own.scores == [1.0, 0.9, 0.8] and own.tags == ["model"] * 3
    seg = c.recommendations("stranger", k=2, segment="DE")
    assert (seg.items, seg.source, seg.fallback) == (["v1-DE-i0", "v1-DE-i1"], "segment:DE", True)
    glob = c.recommendations("stranger", k=2, segment="FR")         # no list for FR: global
    assert (glob.items[0], glob.source, glob.fallback) == ("v1-global-i0", "global", True)
    meta = c.metadata()
    assert (meta["complete"], meta["count_u"], meta["run_id"], meta["checksum"]) == (1, 50, "run-1", res.checksum)
    assert [(v["version"], v["status"]) for v in list_versions(r, ks)] == [("v1", "live")]


def test_wrong_count_refuses_the_switch_and_deletes_the_load(r, ks):
    publish(r, ks, "v1")
    with pytest.raises(PublishError, match=r"user lists: wrote 50, expected 51.*Readers stay on v1"):
        publish(r, ks, "v2", expected={**expected(), "u": 51})
    assert r.get(ks.current) == b"v1"
    assert keys_of(r, ks, "v2") == []


def test_sample_mismatch_refuses_the_switch(r, ks):
    publish(r, ks, "v1")

    def corrupt(written):  # after the first chunk, something else overwrites one of its keys
        if written == 25:
            r.set(ks.user("v2", "u0"), b"tampered")

    with pytest.raises(PublishError, match=r"failed verification: key .*u:u0 reads back 8 bytes"):
        publish(r, ks, "v2", progress=corrupt)
    assert r.get(ks.current) == b"v1"
    assert LookupClient(r, ks).recommendations("u0", 1).items == ["v1-u0-i0"]


def test_verify_hook_can_refuse_the_switch(r, ks):
    with pytest.raises(PublishError, match="too few items"):
        publish(r, ks, "v1", verify_fn=lambda r_, ks_, v: "too few items")
    assert r.get(ks.current) is None


def test_republishing_the_same_content_is_skipped(r, ks):
    first = publish(r, ks, "v1")
    again = publish(r, ks, "v1")
    assert (again.skipped, again.keys_written, again.checksum) == (True, 0, first.checksum)
    assert r.lrange(ks.versions, 0, -1) == [b"v1"]
    # same content in another chunking and order: same checksum, still skipped
    reordered = [list(reversed(c)) for c in chunks("v1", chunk=7)][::-1]
    assert publish_version(r, ks, "v1", reordered, META).skipped
    with pytest.raises(PublishError, match="already published .* with other content"):
        publish(r, ks, "v1", tag="other")


def test_keep_deletes_older_versions_and_only_those(r, ks):
    for v in ("v1", "v2", "v3"):
        res = publish(r, ks, v, keep=2)
    assert res.deleted_versions == ["v1"] and res.previous_version == "v2"
    assert keys_of(r, ks, "v1") == []
    assert len(keys_of(r, ks, "v2")) == len(keys_of(r, ks, "v3")) == 93
    assert r.lrange(ks.versions, 0, -1) == [b"v3", b"v2"]
    assert r.smembers(ks.registry) == {b"v2", b"v3"}


def test_rollback_goes_back_one_version_at_a_time(r, ks):
    for v in ("v1", "v2", "v3"):
        publish(r, ks, v)
    c = LookupClient(r, ks)
    assert rollback(r, ks) == ("v3", "v2")
    assert c.recommendations("u1", 1).items == ["v2-u1-i0"]
    assert rollback(r, ks) == ("v2", "v1")
    assert c.recommendations("u1", 1).version == "v1"
    with pytest.raises(PublishError, match="no older complete version"):
        rollback(r, ks)
    status = {v["version"]: v["status"] for v in list_versions(r, ks)}
    assert status == {"v1": "live", "v2": "rolled_back", "v3": "rolled_back"}
    held = publish(r, ks, "v2")                                      # a plain retry leaves the rollback alone
    assert held.held and "rolled back" in held.held and c.current_version() == "v1"
    again = publish(r, ks, "v2", restore=True)                       # brings v2 back without loading ...
    assert (again.skipped, c.current_version()) == (True, "v2")
    assert again.deleted_versions == ["v3"] and keys_of(r, ks, "v3") == []  # ... and prunes the rolled-back v3
    assert r.lrange(ks.versions, 0, -1) == [b"v2", b"v1"]


def test_delete_version_refuses_the_current_one(r, ks):
    publish(r, ks, "v1")
    publish(r, ks, "v2")
    with pytest.raises(PublishError, match="readers use now"):
        delete_version(r, ks, "v2")
    assert delete_version(r, ks, "v1") == 93
    assert keys_of(r, ks, "v1") == [] and r.lrange(ks.versions, 0, -1) == [b"v2"]


def test_duplicate_ids_are_refused(r, ks):
    rec = ("u", "u1", encode_list(["a"], [1.0], ["model"]))
    with pytest.raises(PublishError, match="chunk 0 holds user lists id 'u1' twice"):
        publish_version(r, ks, "v1", [[rec, rec]], META)
    other = ("u", "u1", encode_list(["b"], [1.0], ["model"]))
    with pytest.raises(PublishError, match="same id appears in two chunks"):
        publish_version(r, ks, "v1", [[rec], [other]], META)
    assert r.get(ks.current) is None


def test_invalid_records_name_chunk_and_position(r, ks):
    good = ("u", "u1", b"{}")
    for bad, why in [(("x", "u2", b"{}"), "kind 'x'"), (("u", "", b"{}"), "id must not be empty"),
                     (("u", "u2", "text"), "value must be bytes"), (("u", "u2"), "not enough values"),
                     (("u", "u2", b"{}", b"{}"), "too many values"), ((["u"], "u2", b"{}"), "unhashable type"),
                     (("u", "u\n2", b"{}"), "id .* contains non-printable"), (None, "cannot unpack"),
                     (("u", "u" * 257, b"{}"), "id is 257 characters"), (("u", 2, b"{}"), "id must be a string"),
                     (("u", "u2", bytearray(b"{}")), "value must be bytes")]:
        with pytest.raises(PublishError, match=f"record 1 of chunk 1 is invalid \\({why}.*keys were deleted"):
            publish_version(r, ks, "v1", [[good], [good[:1] + ("u0",) + good[2:], bad]], META)
        assert keys_of(r, ks, "v1") == []                            # chunk 0 was written, then deleted


def test_leftovers_of_an_unfinished_publish_are_deleted_before_loading(r, ks):
    def dies_midway():
        yield [("u", "ghost", b"{}")]
        raise RuntimeError("job killed")

    with pytest.raises(RuntimeError):
        publish_version(r, ks, "v1", dies_midway(), META)
    assert r.exists(ks.user("v1", "ghost")) and r.get(ks.current) is None
    assert [(v["version"], v["status"]) for v in list_versions(r, ks)] == [("v1", "incomplete")]
    publish(r, ks, "v1")
    assert not r.exists(ks.user("v1", "ghost"))
    assert len(keys_of(r, ks, "v1")) == 93


def test_the_live_version_is_never_reloaded_in_place(r, ks):
    publish(r, ks, "v1")
    r.hdel(ks.meta("v1"), "complete")                                # metadata damaged by hand
    with pytest.raises(PublishError, match="would first delete the live keys"):
        publish(r, ks, "v1")
    assert len(keys_of(r, ks, "v1")) == 93


def test_a_live_lock_of_another_publisher_is_respected(r, ks):
    r.set(ks.publish_lock, '{"host": "other-host", "pid": 1, "token": "t"}', px=60_000)
    with pytest.raises(PublishError, match="another publish holds the lock reco:publish_lock"):
        publish(r, ks, "v1")
    assert r.get(ks.current) is None and keys_of(r, ks, "v1") == []


SLOW_PUBLISH = """
import sys, time
from serving.connection import connect
from serving.keys import KeySpace
from serving.publish import publish_version
from tests.serving.records import chunks

def slowly():
    for chunk in chunks("v2", n_users=4000, chunk=100):
        yield chunk
        time.sleep(0.02)

publish_version(connect(sys.argv[1]), KeySpace("reco", n_shards=16), "v2", slowly(), {"run_id": "killed"})
"""


def test_fault_publish_killed_midway_leaves_readers_on_the_old_version(r, ks, redis_server):
    publish(r, ks, "v1")
    kill_midway(SLOW_PUBLISH, redis_server, r)
    assert r.exists(ks.publish_lock)                                 # the killed process held it
    written = len(keys_of(r, ks, "v2"))
    assert 500 <= written < 4000 + 42
    c = LookupClient(r, ks)
    assert c.current_version() == "v1"
    assert c.recommendations("u7", 1).items == ["v1-u7-i0"]
    assert c.recommendations("u3000", 1, segment="DE").items == ["v1-DE-i0"]  # v2's u3000 not visible

    res = publish_version(r, ks, "v2", chunks("v2", n_users=4000, chunk=1000), META,
                          expected=expected(n_users=4000))
    assert (res.skipped, res.previous_version, res.keys_written) == (False, "v1", 4042)
    assert c.recommendations("u3000", 1).items == ["v2-u3000-i0"]
    assert len(keys_of(r, ks, "v2")) == 4043


def test_fault_redis_down_during_publish_names_the_url_and_keeps_the_pointer(spare_server, ks):
    spare_server.start()
    r2 = connect(spare_server.url, retries=0, socket_timeout=1.0)
    publish(r2, ks, "v1")

    def stop_server(written):
        if written == 25:
            spare_server.stop(save=True)

    with pytest.raises(PublishError) as err:
        publish(r2, ks, "v2", progress=stop_server)
    msg = str(err.value)
    assert f"to {spare_server.url} failed after 25 of its keys were written" in msg
    assert "Readers are still on version v1" in msg and "rerun" in msg
    spare_server.start()
    assert r2.get(ks.current) == b"v1"
    assert publish(r2, ks, "v2").previous_version == "v1"
    assert r2.get(ks.current) == b"v2"
    r2.close()


def test_a_key_already_holding_the_same_bytes_is_accepted_as_a_resend(r, ks):
    # as after a round trip sent again on a new connection: MSETNX refuses the part, the recheck finds our bytes
    records = list(chunks("v1"))

    def resent(written):
        if written == 25:
            r.set(ks.user("v1", "u30"), records[1][5][2])          # chunk 1's u30, byte for byte

    res = publish(r, ks, "v1", progress=resent)
    assert (res.keys_written, r.get(ks.current)) == (92, b"v1")
    assert LookupClient(r, ks).recommendations("u30", 1).items == ["v1-u30-i0"]


def test_a_version_with_an_old_format_checksum_is_compared_the_old_way(r, ks):
    import hashlib
    import zlib
    first = publish(r, ks, "v1")
    assert first.checksum.startswith("crc1:")
    legacy = 0                                                       # what publishers before crc1 stored
    for chunk in chunks("v1"):
        for kind, id_, value in chunk:
            tag = "v1:f" if kind == "f" else f"v1:{zlib.crc32(id_.encode()) % ks.n_shards}"
            digest = hashlib.sha256(f"reco:{{{tag}}}:{kind}:{id_}".encode() + b"\0" + value).digest()
            legacy = (legacy + int.from_bytes(digest[:8], "little")) % 2 ** 64
    r.hset(ks.meta("v1"), "checksum", f"{legacy:016x}-92")
    again = publish(r, ks, "v1")
    assert (again.skipped, again.checksum) == (True, f"{legacy:016x}-92")
    with pytest.raises(PublishError, match="already published .* with other content"):
        publish(r, ks, "v1", tag="other")


# ---------------------------------------------------------------------------- the bulk loader's layout


def mixed_chunks(tag, chunk=9):
    """Every kind in every chunk, ids that are the same under two kinds, non-ASCII ids."""
    records = []
    for n in range(40):
        records += [("u", f"u{n}", encode_list([f"{tag}-u{n}"], [1.0], ["model"])),
                    ("s", f"i{n}", encode_list([f"{tag}-s{n}"], [1.0], ["similar"])),
                    ("i", f"i{n}", b'{"title":"%s %d"}' % (tag.encode(), n))]
    records += [("u", "Zoë-7", b"\xff\x00 raw bytes"), ("u", "用户-1", b""), ("i", "é" * 256, b"long id"),
                ("f", "global", encode_list([f"{tag}-g"], [1.0], ["popular"])), ("f", "segment:DE", b"[]")]
    return [records[i:i + chunk] for i in range(0, len(records), chunk)]


def crc1(records):
    """The crc1 checksum by its definition, one record at a time."""
    import zlib
    sum1 = sum2 = 0
    for kind, id_, value in records:
        h = zlib.crc32(value, zlib.crc32(f"{kind}\0{id_}\0".encode()))
        sum1, sum2 = sum1 + h, sum2 + h * h
    return f"crc1:{sum1 % 2 ** 64:016x}-{sum2 % 2 ** 64:016x}-{len(records)}"


def test_the_checksum_keeps_its_crc1_definition(r, ks):
    # versions stored with crc1 must keep matching a republish of the same content
    records = [rec for c in mixed_chunks("v1") for rec in c]
    res = publish_version(r, ks, "v1", mixed_chunks("v1"), META)
    assert res.checksum == crc1(records) == r.hget(ks.meta("v1"), "checksum").decode()
    again = publish_version(r, ks, "v1", [records[::-1]], META)               # one chunk, reversed
    assert (again.skipped, again.checksum) == (True, res.checksum)


def test_every_key_is_the_keyspace_key_and_holds_its_value(r, ks):
    records = [rec for c in mixed_chunks("v1") for rec in c]
    res = publish_version(r, ks, "v1", mixed_chunks("v1"), META)
    assert res.keys_written == len(records) and res.counts == {"u": 42, "s": 40, "i": 41, "f": 2}
    want = {ks.key("v1", kind, id_): value for kind, id_, value in records}
    assert set(keys_of(r, ks, "v1")) == set(want) | {ks.meta("v1")}
    assert dict(zip(want, r.mget(list(want)))) == want


def parse_resp(payload):
    """The commands in packed RESP bytes, as lists of arguments."""
    commands, pos = [], 0
    while pos < len(payload):
        assert payload[pos:pos + 1] == b"*"
        end = payload.index(b"\r\n", pos)
        n_args, pos, args = int(payload[pos + 1:end]), end + 2, []
        for _ in range(n_args):
            assert payload[pos:pos + 1] == b"$"
            end = payload.index(b"\r\n", pos)
            size = int(payload[pos + 1:end])
            args.append(payload[end + 2:end + 2 + size])
            assert payload[end + 2 + size:end + 4 + size] == b"\r\n"
            pos = end + 4 + size
        commands.append(args)
    return commands


def test_each_msetnx_holds_one_hash_tag_and_at_most_batch_keys(r, ks, monkeypatch):
    from serving import loader as loader_module
    sent = []
    real = loader_module.round_trip

    def spy(r_, payload, n_replies):
        commands = parse_resp(payload)
        assert len(commands) == n_replies
        sent.append(commands)
        return real(r_, payload, n_replies)

    monkeypatch.setattr(loader_module, "round_trip", spy)
    records = [rec for c in mixed_chunks("v1", chunk=60) for rec in c]
    publish_version(r, ks, "v1", mixed_chunks("v1", chunk=60), META, batch_keys=4)
    written = {}
    for commands in sent:
        assert sum(len(c) // 2 for c in commands) < 2 * 4          # a round trip is sent once it holds >= 4 keys
        for name, *args in commands:
            assert name == b"MSETNX" and 2 <= len(args) <= 2 * 4
            keys = [k.decode() for k in args[0::2]]
            assert len({k[k.index("{"):k.index("}")] for k in keys}) == 1   # one slot on a cluster
            assert not set(keys) & set(written)
            written.update(zip(keys, args[1::2]))
    assert written == {ks.key("v1", kind, id_): value for kind, id_, value in records}


def test_a_single_connection_client_can_publish(r, ks, redis_server):
    import redis
    one = redis.Redis.from_url(redis_server, single_connection_client=True)
    try:
        res = publish_version(one, ks, "v1", chunks("v1"), META, expected=expected())
        assert (res.keys_written, one.get(ks.current)) == (92, b"v1")
        assert LookupClient(r, ks).recommendations("u3", 1).items == ["v1-u3-i0"]
    finally:
        one.close()


def test_the_sample_is_uniform_over_every_chunk(ks):
    from serving.loader import Loader
    kept = [0] * 100
    for run in range(400):
        loader = Loader(None, ks, f"v{run}", 10, 10, None, None)
        for no, start in enumerate(range(0, 100, 9)):
            loader._prepare(no, [("u", f"u{n}", b"%d" % n) for n in range(start, min(start + 9, 100))], pack=False)
        assert loader.seen == 100 and len({key for key, _ in loader.sample}) == 10
        for key, value in loader.sample:
            assert key == ks.user(f"v{run}", f"u{int(value)}")
            kept[int(value)] += 1
    # each record is kept with probability 10/100 (40 of 400 runs), whether it came first or last
    assert 1600 < sum(kept[:50]) < 2400 and 1600 < sum(kept[50:]) < 2400 and max(kept) < 80


def test_the_checksum_prefix_comes_from_the_crc_of_the_id():
    import random
    import zlib

    import numpy as np

    from serving.keys import KINDS
    from serving.loader import _KIND_ID_CRC, _crc_zero_byte
    rnd = random.Random(7)
    ids = [bytes(rnd.randrange(256) for _ in range(n)) for n in list(range(40)) + [255, 511, 512, 1023, 1024]]
    for kind_no, kind in enumerate(KINDS):
        got = _crc_zero_byte(np.array([zlib.crc32(i) for i in ids], np.uint32)
                             ^ _KIND_ID_CRC[kind_no, [len(i) for i in ids]])
        assert got.tolist() == [zlib.crc32(kind.encode() + b"\0" + i + b"\0") for i in ids]
