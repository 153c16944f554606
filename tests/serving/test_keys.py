"""Key scheme."""
import zlib

import pytest
from redis.crc import key_slot

from serving.keys import KeySpace, check_id, check_version


def test_key_names_follow_the_scheme():
    ks = KeySpace("reco", n_shards=256)
    shard = zlib.crc32(b"u42") % 256
    assert ks.user("20261126-ab12cd34", "u42") == f"reco:{{20261126-ab12cd34:{shard}}}:u:u42"
    assert ks.similar("v1", "i9") == f"reco:{{v1:{zlib.crc32(b'i9') % 256}}}:s:i9"
    assert ks.item("v1", "i9") == f"reco:{{v1:{zlib.crc32(b'i9') % 256}}}:i:i9"
    assert ks.fallback("v1", "segment:Germany") == "reco:{v1:f}:f:segment:Germany"
    assert ks.meta("v1") == "reco:{v1:m}:meta"
    assert (ks.current, ks.versions) == ("reco:current", "reco:versions")


def test_keys_of_one_shard_share_one_cluster_slot():
    ks = KeySpace(n_shards=4)
    ids = [f"x{n}" for n in range(40)]
    by_shard = {}
    for id_ in ids:
        by_shard.setdefault(ks.shard(id_), set()).update(
            {key_slot(ks.user("v1", id_).encode()), key_slot(ks.similar("v1", id_).encode()),
             key_slot(ks.item("v1", id_).encode())})
    assert len(by_shard) == 4                                     # all shards used
    assert all(len(slots) == 1 for slots in by_shard.values())   # one slot per shard
    # braces in an id do not move the key: the first {...} is the version's tag
    assert key_slot(ks.user("v1", "{evil}").encode()) == key_slot(f"{{v1:{ks.shard('{evil}')}}}".encode())


def test_version_pattern_matches_exactly_one_version(r):
    ks = KeySpace(n_shards=8)
    for v in ("v1", "v10", "v1x"):
        r.mset({ks.user(v, "a"): b"1", ks.fallback(v, "global"): b"2", ks.meta(v): b"3"})
    r.set("reco:current", b"v1")
    found = sorted(k.decode() for k in r.scan_iter(match=ks.version_pattern("v1")))
    assert found == sorted([ks.user("v1", "a"), ks.fallback("v1", "global"), ks.meta("v1")])


@pytest.mark.parametrize("bad", ["", "a*b", "a:b", "{x}", "a b", "x" * 65, "v[1]"])
def test_bad_version_ids_are_refused(bad):
    with pytest.raises(ValueError, match="version id"):
        check_version(bad)


@pytest.mark.parametrize("bad", ["", "x" * 257, "a\nb", "a\x00b"])
def test_bad_ids_are_refused(bad):
    with pytest.raises(ValueError):
        check_id(bad, "user_id")
    assert check_id("Ünïcode id with spaces", "user_id")


def test_stream_keys_follow_the_namespace():
    assert KeySpace("reco").stream("impressions") == "reco:stream:impressions"
    assert KeySpace("shop-b").stream("feedback") == "shop-b:stream:feedback"
    with pytest.raises(ValueError, match="stream name 'reco:stream:impressions' is invalid"):
        KeySpace("reco").stream("reco:stream:impressions")    # a whole key, as the setting once was
