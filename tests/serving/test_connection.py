"""Connecting from a url, and the message when redis is not there."""
import pytest

from serving.connection import RedisUnavailable, connect, describe, parse_url, ping_or_raise, redact
from tests.serving.conftest import free_port


def test_unreachable_redis_message_names_url_without_password_and_what_to_do():
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as err:
        ping_or_raise(connect(url, retries=0, socket_timeout=0.5), url)
    msg = str(err.value)
    assert f"redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in msg and "hunter2" not in msg
    assert "`reco redis start`" in msg
    assert redact("rediss://u:p@h:1/2") == "rediss://u:***@h:1/2" and redact("redis://h:1") == "redis://h:1"
    with pytest.raises(ValueError, match="redis:// or rediss://"):
        connect("http://127.0.0.1:6379")


def test_describe_names_the_server_without_password(redis_server):
    assert describe(connect(redis_server.replace("redis://", "redis://:pw@"))) == redis_server
    assert describe(connect("rediss://h.example:6380/2", ssl_cert_reqs="none")) == "rediss://h.example:6380/2"


def test_a_cluster_url_is_a_plain_url_for_redis_py_plus_the_word_cluster():
    assert parse_url("redis+cluster://h:7000") == ("redis://h:7000", True)
    assert parse_url("rediss+cluster://u:p@h:7000/0") == ("rediss://u:p@h:7000/0", True)
    assert parse_url("redis://h:7000/0", cluster=True) == ("redis://h:7000/0", True)   # redis.cluster: true
    assert parse_url("rediss://h:7000/0") == ("rediss://h:7000/0", False)
    with pytest.raises(ValueError, match=r"redis\+cluster:// or rediss\+cluster://") as err:
        parse_url("http+cluster://:hunter2@h:1")
    assert "hunter2" not in str(err.value)


def test_an_unreachable_cluster_fails_at_connect_naming_the_url_without_password():
    port = free_port()
    with pytest.raises(RedisUnavailable, match=f"cannot reach the Redis Cluster at redis://:\\*\\*\\*@127.0.0.1:{port}"
                       ) as err:
        connect(f"redis+cluster://:hunter2@127.0.0.1:{port}", retries=0, socket_timeout=0.5)
    assert "hunter2" not in str(err.value)
