"""reco redis acl's lines (serving/acl.py) in a namespace other than the default: every key pattern, the
feedback streams' selectors included, is in that namespace (tests/serving/test_redis_tls.py loads the
default namespace's lines into a real redis-server)."""
from serving.acl import acl_lines


def test_the_stream_selectors_follow_the_namespace():
    reader, publisher = acl_lines("shop2", "r-user", "pw-r", "p-user", "pw-p", streams=("impressions", "feedback"))
    for line, counters in ((reader, ["(~shop2:ratelimit:*"]), (publisher, [])):
        assert [w for w in line.split() if w.startswith("~") or w.startswith("(~")] == [
            "~shop2:*", "(~shop2:stream:impressions", "~shop2:stream:feedback", *counters]
        assert "reco" not in line
    assert reader.endswith(" (~shop2:stream:impressions ~shop2:stream:feedback +xadd)"
                           " (~shop2:ratelimit:* +incrby +pexpire)")
    assert publisher.endswith(" (~shop2:stream:impressions ~shop2:stream:feedback +xgroup +xreadgroup +xack)")
