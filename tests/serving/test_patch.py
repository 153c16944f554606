"""Patches (hourly overlays on a nightly version) against a real redis-server: publishing,
reading through to the base, pruning, deletion, rollback, faults and the HTTP service."""
import asyncio

import pytest
import redis
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.client import AsyncLookupClient, LookupClient
from serving.codec import encode_item, encode_list
from serving.connection import connect_async
from serving.keys import KeySpace
from serving.publish import PublishError, delete_version, list_versions, publish_version, rollback
from tests.serving.records import chunks, expected, kill_midway, user_list

META = {"run_id": "hourly"}


def patch_records(tag, users=("u1", "u2", "newcomer"), fallbacks=("global", "segment:DE"), items=("i-new", "i3")):
    """A patch's records, each naming ``tag`` in its values: fresh lists of a few users (u1, u2 are
    in the base, newcomer is not), the fallback lists, details of a new item (i-new) and new details
    of an old one (i3). No similar items: those come from the base."""
    records = [("u", u, user_list(f"{tag}-{u}")) for u in users]
    records += [("f", name, user_list(f"{tag}-{name}", 8)) for name in fallbacks]
    records += [("i", i, encode_item({"title": f"{i} ({tag})", "price": 9.5, "category": "new"})) for i in items]
    return [records]


def publish_patch(r, ks, version, base="v1", tag=None, **kw):
    return publish_version(r, ks, version, patch_records(tag or version, **kw.pop("records", {})), META,
                           base=base, **kw)


def keys_of(r, ks, version):
    return sorted(k.decode() for k in r.scan_iter(match=ks.version_pattern(version), count=1000))


@pytest.fixture
def patched(r, ks):
    """v1 (full: users u0..u49, items i0..i19, both fallbacks) with the patch p1 over it, live."""
    publish_version(r, ks, "v1", chunks("v1"), META, expected=expected())
    res = publish_patch(r, ks, "p1", expected={"u": 3, "s": 0, "i": 2, "f": 2})
    assert (res.previous_version, res.keys_written, res.skipped) == ("v1", 7, False)
    return LookupClient(r, ks)


def lookups(c):
    """The same calls, on a blocking client or (awaited) on an asyncio one."""
    return [c.recommendations("u1", 3), c.recommendations("u7", 3), c.recommendations("newcomer", 2),
            c.recommendations("stranger", 2, segment="DE"), c.recommendations("stranger", 2),
            c.similar("i4", 2), c.similar("i-new", 2),
            c.item_details(["i-new", "i3", "i1", "unknown"]), c.item_details(["i1", "i-new"]),
            c.item_details(["i3"], version="p1"), c.current_version()]


# ---------------------------------------------------------------------------- reading


def test_a_patch_answers_what_it_holds_and_its_base_the_rest(patched, r, ks):
    c = patched
    own = c.recommendations("u1", 3)                                  # patched user: the patch's list
    assert (own.items, own.source, own.version, own.layer) == (["p1-u1-i0", "p1-u1-i1", "p1-u1-i2"],
                                                               "personal", "p1", "patch")
    old = c.recommendations("u7", 3)                                  # not in the patch: the base's list
    assert (old.items[0], old.source, old.fallback, old.version, old.layer) == ("v1-u7-i0", "personal", False,
                                                                                "p1", "base")
    assert c.recommendations("newcomer", 1).items == ["p1-newcomer-i0"]  # only in the patch
    seg = c.recommendations("stranger", 2, segment="DE")               # fallbacks: the patch's
    assert (seg.items, seg.source, seg.layer) == (["p1-segment:DE-i0", "p1-segment:DE-i1"], "segment:DE", "patch")
    assert c.recommendations("stranger", 1, segment="FR").items == ["p1-global-i0"]
    sim = c.similar("i4", 2)                                          # the patch has no similar items
    assert (sim.items, sim.version, sim.layer) == (["v1-s4-i0", "v1-s4-i1"], "p1", "base")
    assert c.similar("unknown", 2) is None
    details = c.item_details(["i-new", "i3", "i1", "unknown"])
    assert details == {"i-new": {"title": "i-new (p1)", "price": 9.5, "category": "new"},   # new item: patch
                       "i3": {"title": "i3 (p1)", "price": 9.5, "category": "new"},         # updated: patch
                       "i1": {"title": "item 1 (v1)", "price": 1.5, "category": "c"}}      # old item: base
    assert c.metadata()["base"] == "v1" and c.metadata()["count_s"] == 0
    # a reader that has not looked the patch up yet, asked for its details by id, finds the base itself
    assert LookupClient(r, ks).item_details(["i1", "i-new"], version="p1") == {
        "i1": details["i1"], "i-new": details["i-new"]}


def test_a_patch_without_some_kind_reads_all_of_that_kind_from_its_base(patched, r, ks):
    publish_patch(r, ks, "p2", records={"users": ("u2",), "fallbacks": ("global",), "items": ()})
    c = LookupClient(r, ks)
    seg = c.recommendations("stranger", 1, segment="DE")              # p2 has no DE list: the base's
    assert (seg.items, seg.source, seg.layer) == (["v1-DE-i0"], "segment:DE", "base")
    assert c.recommendations("u1", 1).items == ["v1-u1-i0"]           # p1 is not p2's base: v1 answers
    assert c.recommendations("u2", 1).items == ["p2-u2-i0"]
    assert c.item_details(["i-new"]) == {}                            # p1's new item is not in p2 or v1


def test_a_lookup_on_a_patch_costs_the_same_round_trips(patched, ks, redis_server):
    class Counting(redis.Connection):
        sends = 0

        def send_packed_command(self, command, check_health=True):
            Counting.sends += 1
            return super().send_packed_command(command, check_health)

    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    pool = redis.ConnectionPool(connection_class=Counting, host="127.0.0.1", port=port)
    c = LookupClient(redis.Redis(connection_pool=pool), ks)
    c.recommendations("u1", 5)                                        # the once-per-version check not counted
    for call, round_trips in ((lambda: c.recommendations("u7", 5), 1), (lambda: c.similar("i1", 3), 1),
                              (lambda: c.recommendations("nobody", 5, segment="DE"), 1),  # pointer + keys: one pipeline
                              (lambda: c.item_details([f"i{n}" for n in range(20)] + ["i-new"]), 2)):  # pointer, MGETs
        Counting.sends = 0
        call()
        assert Counting.sends == round_trips                          # as on a full version
    # the merged answer is cached under the patch's id: the next call reads the pointer only
    Counting.sends = 0
    assert c.item_details(["i-new", "i1"]) == {"i-new": {"title": "i-new (p1)", "price": 9.5, "category": "new"},
                                               "i1": {"title": "item 1 (v1)", "price": 1.5, "category": "c"}}
    assert Counting.sends == 1
    assert c.items.split("v1", ["i1"]) == ({}, ["i1"])                # nothing cached under the base's id
    pool.disconnect()


def test_the_asyncio_client_answers_a_patch_like_the_blocking_one(patched, ks, redis_server):
    async def answers():
        c = AsyncLookupClient(connect_async(redis_server), ks)
        try:
            return [await call for call in lookups(c)]
        finally:
            await c.aclose()

    got, want = asyncio.run(answers()), lookups(patched)
    assert got == want
    assert [a.layer for a in want[:7] if a is not None] == ["patch", "base", "patch", "patch", "patch", "base"]


# ---------------------------------------------------------------------------- publishing


def test_republishing_a_patch_is_a_no_op_and_other_content_is_refused(patched, r, ks):
    first = r.hgetall(ks.meta("p1"))
    again = publish_patch(r, ks, "p1")
    assert (again.skipped, again.keys_written) == (True, 0) and r.hgetall(ks.meta("p1")) == first
    with pytest.raises(PublishError, match="p1 is already published .* with other content"):
        publish_patch(r, ks, "p1", tag="other")
    with pytest.raises(PublishError, match="already published .* as a patch over v1, not as a full version"):
        publish_version(r, ks, "p1", patch_records("p1"), META)
    publish_version(r, ks, "v2", chunks("v2"), META)
    with pytest.raises(PublishError, match="already published .* as a patch over v1, not as a patch over v2"):
        publish_patch(r, ks, "p1", base="v2")
    assert r.get(ks.current) == b"v2"


@pytest.mark.parametrize("base,msg", [
    ("p1", r"patch p9: its base p1 is itself a patch \(over v1\); a patch must sit on a full \(nightly\) version"),
    ("v0", r"patch p9: its base version v0 does not exist on .* Publish the full version v0 first"),
    ("v2", r"patch p9: its base version v2 on .* is not complete .* Rerun the publish of v2"),
    ("p9", r"patch p9 cannot be its own base"),
])
def test_a_patch_on_a_patch_or_on_a_missing_or_incomplete_base_is_refused(patched, r, ks, base, msg):
    def dies_midway():
        yield next(iter(chunks("v2")))
        raise RuntimeError("job killed")

    with pytest.raises(RuntimeError, match="job killed"):
        publish_version(r, ks, "v2", dies_midway(), META)             # leaves v2 incomplete
    with pytest.raises(PublishError, match=msg):
        publish_patch(r, ks, "p9", base=base)
    assert r.get(ks.current) == b"p1" and keys_of(r, ks, "p9") == []


def test_a_base_with_other_shards_is_refused(patched, r):
    with pytest.raises(PublishError, match="its base v1 .* n_shards=16, this publisher uses n_shards=8"):
        publish_patch(r, KeySpace("reco", n_shards=8), "p2")


def test_metadata_may_not_set_the_base(r, ks):
    with pytest.raises(ValueError, match=r"metadata may not set \['base'\]"):
        publish_version(r, ks, "v1", chunks("v1"), {"base": "v0"})


SLOW_PATCH = """
import sys, time
from serving.codec import encode_list
from serving.connection import connect
from serving.keys import KeySpace
from serving.publish import publish_version

def slowly():
    for start in range(0, 4000, 100):
        yield [("u", f"u{n}", encode_list(["p2-u%d-i0" % n], [1.0], ["model"])) for n in range(start, start + 100)]
        time.sleep(0.02)

publish_version(connect(sys.argv[1]), KeySpace("reco", n_shards=16), "p2", slowly(), {"run_id": "killed"},
                base="v1")
"""


def test_fault_a_patch_killed_midway_leaves_readers_on_the_previous_pointer(patched, r, ks, redis_server):
    kill_midway(SLOW_PATCH, redis_server, r)
    assert 500 <= len(keys_of(r, ks, "p2")) < 4000 + 1
    c = LookupClient(r, ks)
    assert c.current_version() == "p1"                                # the previous pointer value, a patch
    assert c.recommendations("u1", 1).items == ["p1-u1-i0"]
    assert c.recommendations("u7", 1).items == ["v1-u7-i0"]           # p2 wrote u7 already: not visible
    assert [(v["version"], v["status"], v["kind"]) for v in list_versions(r, ks)] == [
        ("p1", "live", "patch"), ("v1", "complete", "full"), ("p2", "incomplete", "patch")]

    records = [[("u", f"u{n}", encode_list([f"p2-u{n}-i0"], [1.0], ["model"])) for n in range(4000)]]
    res = publish_version(r, ks, "p2", records, META, base="v1", expected={"u": 4000})
    assert (res.skipped, res.previous_version, res.keys_written) == (False, "p1", 4000)
    assert c.recommendations("u7", 1).items == ["p2-u7-i0"]
    assert c.recommendations("stranger", 1).items == ["v1-global-i0"]   # p2 has no fallbacks: v1's


# ---------------------------------------------------------------------------- bookkeeping


def test_prune_keeps_the_base_of_every_kept_version(patched, r, ks):
    for p in ("p2", "p3"):
        publish_patch(r, ks, p, keep=2)
    assert r.lrange(ks.versions, 0, -1) == [b"p3", b"p2", b"v1"]      # p1 pruned, v1 kept: the base of p3, p2
    assert keys_of(r, ks, "p1") == [] and len(keys_of(r, ks, "v1")) == 93
    assert LookupClient(r, ks).recommendations("u7", 1).items == ["v1-u7-i0"]
    entries = {v["version"]: (v["status"], v["kind"], v["base"]) for v in list_versions(r, ks)}
    assert entries == {"p3": ("live", "patch", "v1"), "p2": ("complete", "patch", "v1"),
                       "v1": ("complete", "full", None)}
    publish_version(r, ks, "v2", chunks("v2"), META, keep=2)          # p3 still kept, so v1 too
    assert r.lrange(ks.versions, 0, -1) == [b"v2", b"p3", b"v1"]
    res = publish_patch(r, ks, "p4", base="v2", keep=2)               # no kept patch sits on v1 any more
    assert sorted(res.deleted_versions) == ["p3", "v1"]
    assert r.lrange(ks.versions, 0, -1) == [b"p4", b"v2"] and keys_of(r, ks, "v1") == []


def test_delete_version_refuses_the_base_of_the_current_or_a_kept_patch(patched, r, ks):
    with pytest.raises(PublishError, match=r"version v1 .* is the base of the patch\(es\) p1 \(current\)"):
        delete_version(r, ks, "v1")
    publish_version(r, ks, "v2", chunks("v2"), META)                  # p1 is no longer current, but kept
    with pytest.raises(PublishError, match=r"is the base of the patch\(es\) p1: .*delete those patches first"):
        delete_version(r, ks, "v1")
    assert len(keys_of(r, ks, "v1")) == 93
    assert delete_version(r, ks, "p1") == 8
    assert delete_version(r, ks, "v1") == 93


def test_rollback_from_a_patch_goes_to_the_previous_entry(patched, r, ks):
    publish_patch(r, ks, "p2")
    c = LookupClient(r, ks)
    assert rollback(r, ks) == ("p2", "p1")
    assert c.recommendations("u1", 1).items == ["p1-u1-i0"]
    assert rollback(r, ks) == ("p1", "v1")
    assert c.recommendations("u1", 1).items == ["v1-u1-i0"] and c.recommendations("u1", 1).layer is None


def test_rollback_skips_a_patch_whose_base_is_not_complete(r, ks):
    for v in ("v0", "v1"):
        publish_version(r, ks, v, chunks(v), META)
    publish_patch(r, ks, "p1", keep=5)
    publish_version(r, ks, "v2", chunks("v2"), META, keep=5)
    r.hdel(ks.meta("v1"), "complete")                                 # damaged by hand
    assert rollback(r, ks) == ("v2", "v0")                            # neither p1 nor its base v1


# ---------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_the_service_answers_a_patched_user_from_the_patch(r, ks, redis_server, kind):
    publish_version(r, ks, "v1", chunks("v1"), META)
    publish_version(r, ks, "p1", [[("u", "u1", encode_list(["i-new", "i1"], [0.9, 0.8], ["explore", "model"])),
                                   ("i", "i-new", encode_item({"title": "New lamp", "price": 20.0,
                                                               "category": "decor"}))]], META, base="v1")
    reader = AsyncLookupClient(connect_async(redis_server), ks) if kind == "async" else LookupClient(r, ks)
    with TestClient(create_app(reader)) as api:
        body = api.get("/v1/users/u1/recommendations", params={"k": 5}).json()
        other = api.get("/v1/users/u7/recommendations", params={"k": 1}).json()
        item = api.get("/v1/items/i-new").json()
        if kind == "async":
            api.portal.call(reader.aclose)
    assert (body["version"], body["source"]) == ("p1", "personal")
    assert [(p["item_id"], p["title"]) for p in body["items"]] == [("i-new", "New lamp"), ("i1", "item 1 (v1)")]
    assert (other["version"], other["items"][0]["item_id"]) == ("p1", "v1-u7-i0")
    assert (item["title"], item["version"]) == ("New lamp", "p1")
