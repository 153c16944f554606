"""Connecting from a url, and the message when redis is not there."""
import pytest

from serving.connection import RedisUnavailable, connect, describe, ping_or_raise, redact
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
