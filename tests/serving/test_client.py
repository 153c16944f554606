"""LookupClient and AsyncLookupClient against a real redis-server."""
import asyncio

import pytest
import redis

from serving.client import AsyncLookupClient, LookupClient, NoPublishedVersion
from serving.codec import StoredValueError, encode_item, encode_list
from serving.connection import connect, connect_async
from serving.item_cache import ItemCache
from serving.keys import KeySpace
from serving.publish import publish_version
from tests.serving.conftest import free_port
from tests.serving.records import chunks


class CountingConnection(redis.Connection):
    """Counts round trips: a pipeline sends all its commands in one send_packed_command."""
    sends = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


@pytest.fixture
def published(r, ks):
    publish_version(r, ks, "v1", chunks("v1"), {"run_id": "r1"})
    return LookupClient(r, ks)


def test_a_lookup_costs_one_round_trip(published, r, ks, redis_server):
    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1", port=port)
    c = LookupClient(redis.Redis(connection_pool=pool), ks)
    c.recommendations("u1", 5)                           # connecting and the once-per-version check not counted
    for call, round_trips in ((lambda: c.recommendations("u1", 5), 1),
                              (lambda: c.recommendations("nobody", 5, segment="DE"), 1),
                              (lambda: c.similar("i1", 3), 1), (lambda: c.similar("unknown", 3), 1),
                              (lambda: c.item_details([f"i{n}" for n in range(20)]), 2),   # pointer, then MGETs
                              (lambda: c.item_details([f"i{n}" for n in range(20)], version="v1"), 0)):  # cached
        CountingConnection.sends = 0
        call()
        assert CountingConnection.sends == round_trips
    pool.disconnect()


def test_a_switch_is_seen_by_the_next_lookup_and_never_mixed(published, r, ks, redis_server):
    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1", port=port)
    c = LookupClient(redis.Redis(connection_pool=pool), ks)
    assert c.recommendations("u1", 5).items[0] == "v1-u1-i0"
    assert c.similar("i1", 3).items[0] == "v1-s1-i0"
    publish_version(r, ks, "v2", chunks("v2"), {"run_id": "r2"})
    CountingConnection.sends = 0
    hit = c.recommendations("u1", 5)                     # read v1's lists with the pointer: dropped, read v2's
    assert (hit.version, hit.items) == ("v2", [f"v2-u1-i{j}" for j in range(5)])
    assert CountingConnection.sends == 3                 # pipeline, v2's n_shards check, v2's lists
    CountingConnection.sends = 0
    assert c.similar("i1", 3).items == ["v2-s1-i0", "v2-s1-i1", "v2-s1-i2"]
    assert c.recommendations("nobody", 2, segment="DE").items == ["v2-DE-i0", "v2-DE-i1"]
    assert CountingConnection.sends == 2                 # v2 is known now: one round trip each
    r.set(ks.current, "v1")                              # a rollback is seen at once too
    assert c.recommendations("u1", 5).version == "v1"
    r.delete(ks.current)
    with pytest.raises(NoPublishedVersion):
        c.recommendations("u1", 5)
    pool.disconnect()


def test_the_asyncio_client_sees_a_switch_on_the_next_lookup(published, r, ks, redis_server):
    async def lookups():
        c = AsyncLookupClient(connect_async(redis_server), ks)
        try:
            before = await c.recommendations("u1", 2)
            publish_version(r, ks, "v2", chunks("v2"), {"run_id": "r2"})
            return before, await c.recommendations("u1", 2), await c.similar("i1", 1)
        finally:
            await c.aclose()

    before, after, sim = asyncio.run(lookups())
    assert (before.version, before.items) == ("v1", ["v1-u1-i0", "v1-u1-i1"])
    assert (after.version, after.items) == ("v2", ["v2-u1-i0", "v2-u1-i1"])
    assert (sim.version, sim.items) == ("v2", ["v2-s1-i0"])


def test_lists_are_truncated_to_k_and_say_where_they_come_from(published):
    full = published.recommendations("u1", 1000)
    assert len(full.items) == 5 and full.tags == ["model"] * 4 + ["popular"]
    one = published.recommendations("u1", 1)
    assert (one.items, one.scores, one.tags) == (["v1-u1-i0"], [1.0], ["model"])
    seg = published.recommendations("nobody", 3, segment="DE")
    assert (len(seg.items), seg.source, seg.fallback) == (3, "segment:DE", True)


def test_similar_and_item_details(published):
    sim = published.similar("i4", 2)
    assert (sim.items, sim.source, sim.fallback, sim.version) == (["v1-s4-i0", "v1-s4-i1"], "similar", False, "v1")
    assert published.similar("unknown", 2) is None
    details = published.item_details(["i3", "unknown", "i1", "i3"])
    assert list(details) == ["i3", "i1"]                 # input order, unknown left out, duplicates once
    assert details["i1"] == {"title": "item 1 (v1)", "price": 1.5, "category": "c"}
    assert published.item_details([]) == {}


def test_no_global_list_gives_an_empty_answer(r, ks):
    publish_version(r, ks, "v1", [[("u", "u1", encode_list(["a"], [1.0], ["model"])),
                                   ("i", "a", encode_item({"title": "A"}))]], {})
    none = LookupClient(r, ks).recommendations("nobody", 3)
    assert (none.items, none.source, none.fallback) == ([], "none", True)


def test_nothing_published_raises_no_published_version(r, ks):
    c = LookupClient(r, ks)
    assert c.current_version() is None
    with pytest.raises(NoPublishedVersion, match="reco:current is not set. Run the publish job"):
        c.recommendations("u1", 3)
    with pytest.raises(NoPublishedVersion):
        c.metadata()


def test_metadata_of_the_current_version(published):
    meta = published.metadata()
    assert (meta["version"], meta["run_id"], meta["count_u"], meta["complete"]) == ("v1", "r1", 50, 1)


@pytest.mark.parametrize("kwargs,msg", [
    ({"user_id": "u1", "k": 0}, "k must be"), ({"user_id": "u1", "k": 1001}, "k must be"),
    ({"user_id": "u1", "k": "5"}, "k must be"), ({"user_id": "", "k": 5}, "user_id must not be empty"),
    ({"user_id": "x" * 257, "k": 5}, "at most 256"), ({"user_id": "a\tb", "k": 5}, "non-printable"),
    ({"user_id": "u1", "k": 5, "segment": ""}, "segment must not be empty"),
])
def test_bad_arguments_raise_value_error(published, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        published.recommendations(**kwargs)


def test_a_reader_with_other_shards_is_refused(published, r):
    with pytest.raises(RuntimeError, match="published with n_shards=16, but this reader uses n_shards=256"):
        LookupClient(r, KeySpace("reco")).recommendations("u1", 3)


def test_redis_errors_propagate(ks):
    c = LookupClient(connect(f"redis://127.0.0.1:{free_port()}/0", retries=0, socket_timeout=0.5), ks)
    with pytest.raises(redis.ConnectionError):
        c.recommendations("u1", 3)


def test_item_details_are_cached_per_version(published, r, ks, redis_server):
    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1", port=port)
    c = LookupClient(redis.Redis(connection_pool=pool), ks)
    ids = ["i1", "unknown", "i2"]
    first = c.item_details(ids)
    CountingConnection.sends = 0
    assert c.item_details(ids) == first == {"i1": {"title": "item 1 (v1)", "price": 1.5, "category": "c"},
                                            "i2": {"title": "item 2 (v1)", "price": 2.5, "category": "c"}}
    assert CountingConnection.sends == 1                 # the pointer only: known and unknown ids were cached
    CountingConnection.sends = 0
    assert c.item_details(ids, version="v1") == first and CountingConnection.sends == 0
    first["i1"]["title"] = "changed by the caller"       # answers are copies, the cache is not touched
    assert c.item_details(["i1"])["i1"]["title"] == "item 1 (v1)"
    # a new version answers from its own keys, never from the old version's cache
    publish_version(r, ks, "v2", chunks("v2"), {"run_id": "r2"})
    assert c.item_details(["i1"]) == {"i1": {"title": "item 1 (v2)", "price": 1.5, "category": "c"}}
    pool.disconnect()


def test_a_version_published_again_under_its_id_is_not_answered_from_the_cache(r, ks):
    from serving.codec import encode_item
    from serving.cleanup import delete_version
    glob = ("f", "global", encode_list(["a"], [1.0], ["popular"]))
    publish_version(r, ks, "v1", [[("i", "a", encode_item({"title": "old"})), glob]], {})
    c = LookupClient(r, ks)
    assert c.item_details(["a"])["a"]["title"] == "old"
    publish_version(r, ks, "v2", [[glob]], {})
    assert c.item_details(["a"]) == {}                   # the pointer moved: v2 has no item a
    delete_version(r, ks, "v1")
    publish_version(r, ks, "v1", [[("i", "a", encode_item({"title": "new"})), glob]], {})
    assert c.item_details(["a"])["a"]["title"] == "new"


def test_item_cache_bounds():
    cache = ItemCache(max_items=2, max_versions=2)
    cache.store("v1", {"a": 1, "b": 2, "c": 3})          # oldest id out first
    assert cache.split("v1", ["a", "b", "c"]) == ({"b": 2, "c": 3}, ["a"])
    cache.store("v2", {"a": 1})
    cache.store("v3", {"a": 1})                          # least recently used version out
    assert cache.split("v1", ["b"]) == ({}, ["b"]) and len(cache) == 2


def test_the_asyncio_client_answers_like_the_blocking_one(published, ks, redis_server):
    async def answers():
        c = AsyncLookupClient(connect_async(redis_server), ks)
        try:
            return [await c.recommendations("u1", 3), await c.recommendations("nobody", 2, segment="DE"),
                    await c.similar("i4", 2), await c.similar("unknown", 2),
                    await c.item_details(["i3", "unknown", "i1", "i3"]), await c.item_details(["i3"]),
                    (await c.metadata())["run_id"], await c.current_version()]
        finally:
            await c.aclose()

    expected = [published.recommendations("u1", 3), published.recommendations("nobody", 2, segment="DE"),
                published.similar("i4", 2), published.similar("unknown", 2),
                published.item_details(["i3", "unknown", "i1", "i3"]), published.item_details(["i3"]),
                published.metadata()["run_id"], published.current_version()]
    assert asyncio.run(answers()) == expected


def test_a_burst_beyond_the_connection_limit_waits_for_a_connection_instead_of_failing(published, ks, redis_server):
    async def burst():
        r = connect_async(redis_server, max_connections=2)
        c = AsyncLookupClient(r, ks)
        try:
            answers = await asyncio.gather(*[c.recommendations("u1", 3) for _ in range(40)])
            pool = r.connection_pool
            return answers, len(pool._available_connections) + len(pool._in_use_connections)
        finally:
            await c.aclose()

    answers, opened = asyncio.run(burst())
    assert answers == [published.recommendations("u1", 3)] * 40
    assert opened <= 2


def test_connection_limit_must_be_positive(redis_server):
    with pytest.raises(ValueError, match="max_connections"):
        connect_async(redis_server, max_connections=0)


def test_the_asyncio_client_raises_what_the_blocking_one_raises(r, ks):
    async def lookup(url, **kw):
        c = AsyncLookupClient(connect_async(url, **kw), ks)
        try:
            return await c.recommendations("u1", 3)
        finally:
            await c.aclose()

    kw = r.connection_pool.connection_kwargs
    with pytest.raises(NoPublishedVersion, match="reco:current is not set"):
        asyncio.run(lookup(f"redis://{kw['host']}:{kw['port']}/0"))
    with pytest.raises(redis.ConnectionError):
        asyncio.run(lookup(f"redis://127.0.0.1:{free_port()}/0", retries=0, socket_timeout=0.5))


def test_decode_list_limit_is_the_same_as_slicing():
    from serving.codec import decode_list
    data = encode_list(["a", "b", "c"], [3.0, 2.0, 1.0], ["model", "editorial", "pinned"])
    whole = decode_list(data)
    for k in (0, 1, 2, 3, 10):
        part = decode_list(data, k)
        assert (part.items, part.scores, part.tags) == (whole.items[:k], whole.scores[:k], whole.tags[:k])
    packed = encode_list(["a", "b"], [1.0, 0.5], "trending")
    assert decode_list(packed, 1).tags == ["trending"]


@pytest.mark.parametrize("ids,msg", [
    (["i1", ""], "item_id must not be empty"), (["i1", "a\tb"], "non-printable"),
    (["x" * 257], "at most 256"), (["i1", 7], "item_id must be a string"),
])
def test_item_details_refuses_bad_ids_whether_cached_or_not(published, ids, msg):
    published.item_details(["i1"])                       # i1 cached
    with pytest.raises(ValueError, match=msg):
        published.item_details(ids)
    with pytest.raises(ValueError, match=msg):
        published.item_details(ids, version="v1")


def test_item_details_without_copies_are_the_cached_dicts(published):
    shared = published.item_details(["i1"], copy=False)
    assert published.item_details(["i1"], copy=False)["i1"] is shared["i1"]
    assert published.item_details(["i1"])["i1"] is not shared["i1"] and published.item_details(["i1"]) == shared


def test_the_asyncio_client_raises_an_error_reply_as_the_pipeline_does_and_stays_usable(published, r, ks,
                                                                                      redis_server):
    async def lookups():
        c = AsyncLookupClient(connect_async(redis_server), ks)
        try:
            await c.recommendations("u1", 2)
            r.delete(ks.user("v1", "u1"))
            r.rpush(ks.user("v1", "u1"), "not a string")  # GET of a list: WRONGTYPE
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await c.recommendations("u1", 2)
            return await c.recommendations("u2", 2)       # the connection is still in step
        finally:
            await c.aclose()

    assert asyncio.run(lookups()).items == ["v1-u2-i0", "v1-u2-i1"]


def test_an_unreadable_value_read_through_a_patch_names_the_key_and_version_it_came_from(r, ks, redis_server):
    publish_version(r, ks, "v1", chunks("v1"), {"run_id": "r1"})
    publish_version(r, ks, "p1", [[("u", "u1", encode_list(["p1-i0"], [1.0], "model"))]], {"run_id": "r2"},
                    base="v1")
    r.set(ks.user("p1", "u1"), b"\x00")                    # the patch's own list
    r.set(ks.user("v1", "u2"), b'{"v":9}')                 # lists and details the patch reads from its base
    r.set(ks.similar("v1", "i1"), b"[]")
    r.set(ks.item("v1", "i2"), b"{")
    expected = [(ks.user("p1", "u1"), "p1"), (ks.user("v1", "u2"), "v1"), (ks.similar("v1", "i1"), "v1"),
                (ks.item("v1", "i2"), "v1")]

    def lookups(c):
        return (lambda: c.recommendations("u1", 3), lambda: c.recommendations("u2", 3), lambda: c.similar("i1", 3),
                lambda: c.item_details(["i2"]))

    def blocking():
        errors = []
        for call in lookups(LookupClient(r, ks)):
            with pytest.raises(StoredValueError) as err:
                call()
            errors.append(err.value)
        return errors

    async def in_asyncio():
        reader = AsyncLookupClient(connect_async(redis_server), ks)
        errors = []
        try:
            for call in lookups(reader):
                with pytest.raises(StoredValueError) as err:
                    await call()
                errors.append(err.value)
        finally:
            await reader.aclose()
        return errors

    for errors in (blocking(), asyncio.run(in_asyncio())):
        assert [(e.key, e.version) for e in errors] == expected
        assert all(f"the value of {e.key} (version {e.version}) cannot be read" in str(e) for e in errors)
        assert all(isinstance(e, ValueError) for e in errors)   # still what callers caught before
