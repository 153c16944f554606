"""Forgetting a customer in Redis (serving/forget.py) against a real redis-server: their list leaves every
version (a full version, an hourly patch over it, an older rolled-back one), their id leaves sample_users, the
metadata matches what the publisher writes without them, and nobody else's lookups change."""
from __future__ import annotations

import json

import pytest

from serving.client import LookupClient
from serving.codec import encode_item
from serving.forget import crc1_without, forget_user
from serving.publish import PublishError, publish_version, rollback
from serving.versions import read_meta
from tests.serving.records import user_list

GONE = "C-forget-42"        # the customer to forget: no other id or value contains this text
OTHERS = [f"C{n:03d}" for n in range(30)]


def records(tag, users):
    recs = [("u", u, user_list(f"{tag}-{u}")) for u in users]
    recs += [("s", f"i{n}", user_list(f"{tag}-s{n}", 3)) for n in range(5)]
    recs += [("i", f"i{n}", encode_item({"title": f"item {n}", "price": 1.5, "category": "c"})) for n in range(5)]
    recs += [("f", "global", user_list(f"{tag}-global", 8))]
    return [recs]


def meta(users):
    return {"run_id": "t", "sample_users": ",".join(sorted(users)[:20])}


def publish(r, ks, version, users, tag=None, **kw):
    return publish_version(r, ks, version, records(tag or version, users), meta(users), **kw)


def every_key_and_value(r, match="*"):
    """Every key name (matching ``match``) and every string, hash, list or set value, as text."""
    out = []
    for key in r.scan_iter(match=match, count=1000):
        out.append(key.decode())
        kind = r.type(key).decode()
        if kind == "string":
            out.append(r.get(key).decode(errors="replace"))
        elif kind == "hash":
            out += [f"{k.decode()}={v.decode(errors='replace')}" for k, v in r.hgetall(key).items()]
        elif kind in ("list", "set"):
            out += [v.decode() for v in (r.lrange(key, 0, -1) if kind == "list" else r.smembers(key))]
    return out


@pytest.fixture
def versions(r, ks):
    """v0, v1 (full, live under a patch), p1 (a patch over v1), and v2 (rolled back, then pruned by p1's publish:
    keep=3): GONE is in the three kept."""
    users = OTHERS + [GONE]
    publish(r, ks, "v0", users)
    publish(r, ks, "v1", users)
    publish(r, ks, "v2", users)
    rollback(r, ks)                                   # v2 rolled back: readers on v1
    publish(r, ks, "p1", [GONE, "C001"], base="v1")   # GONE and C001 active in the hour
    return users


def test_forget_removes_the_customer_from_every_version_and_nothing_else(r, ks, versions):
    c = LookupClient(r, ks)
    before = {u: c.recommendations(u, 5).items for u in OTHERS}
    assert c.recommendations(GONE, 5).items[0] == f"p1-{GONE}-i0"       # planted: the patch answers
    assert any(GONE in text for text in every_key_and_value(r))
    metas = {v: read_meta(r, ks, v) for v in ("v0", "v1", "p1")}

    assert not r.exists(ks.meta("v2"))

    res = forget_user(r, ks, GONE)

    assert sorted(res.keys_removed) == sorted(ks.user(v, GONE) for v in ("v0", "v1", "p1"))
    assert sorted(res.versions_updated) == ["p1", "v0", "v1"]
    assert not [text for text in every_key_and_value(r) if GONE in text]
    got = c.recommendations(GONE, 5)
    assert got.fallback and got.items[0] == "p1-global-i0"             # the customer now gets the fallback
    assert {u: c.recommendations(u, 5).items for u in OTHERS} == before  # nobody else's list moved
    assert c.current_version() == "p1"
    for v in ("v0", "v1", "p1"):
        now = read_meta(r, ks, v)
        assert now["count_u"] == metas[v]["count_u"] - 1
        assert now["keys"] == metas[v]["keys"] - 1
        assert now["sample_users"].split(",") == [u for u in metas[v]["sample_users"].split(",") if u != GONE]
        assert now["complete"] == 1 and now.get("base") == metas[v].get("base")


def test_the_metadata_is_what_a_publish_without_the_customer_writes(r, ks, versions):
    forget_user(r, ks, GONE)
    publish(r, ks, "v9", OTHERS, tag="v1")             # v1's content, published without GONE
    fresh, forgotten = read_meta(r, ks, "v9"), read_meta(r, ks, "v1")
    for field in ("checksum", "count_u", "keys", "bytes"):   # sample_users: one fewer (the 21st is not known)
        assert forgotten[field] == fresh[field], field
    # so republishing v1 from tables that no longer hold the customer is a no-op, not a clash
    again = publish(r, ks, "v1", OTHERS, restore=True)
    assert again.skipped and again.keys_written == 0


def test_forgetting_again_or_an_unknown_customer_changes_nothing(r, ks, versions):
    forget_user(r, ks, GONE)
    state = sorted(every_key_and_value(r))
    assert forget_user(r, ks, GONE).keys_removed == []
    assert forget_user(r, ks, "never-seen").versions_updated == []
    assert sorted(every_key_and_value(r)) == state


def test_forget_waits_for_no_publish_and_refuses_while_one_runs(r, ks, versions):
    r.set(ks.publish_lock, json.dumps({"host": "another-host", "pid": 1, "purpose": "publish v3"}), px=60_000)
    with pytest.raises(PublishError, match="another publish holds the lock"):
        forget_user(r, ks, GONE)
    assert r.exists(ks.user("v1", GONE))
    r.delete(ks.publish_lock)
    assert forget_user(r, ks, GONE).keys_removed


def test_crc1_without_undoes_one_record():
    # known answer: a version of one record has sums h and h*h; without it, zero
    from zlib import crc32
    h = crc32(b"u\0x\0abc")
    assert crc1_without(f"crc1:{h:016x}-{h * h:016x}-1", "u", "x", b"abc") == f"crc1:{0:016x}-{0:016x}-0"
    with pytest.raises(ValueError):
        crc1_without("crc1:12-34", "u", "x", b"")
