"""redis: the ACL users of the two roles, their passwords from the environment, the TLS files, a cluster."""
import pytest

from config.storage import RedisConfig
from core.errors import ConfigError

TLS = "rediss://redis.internal:6379/0"


def test_each_role_gets_its_user_and_its_password_from_its_variable():
    rc = RedisConfig(url=TLS, reader_user="reco-reader", publisher_user="reco-publisher", ssl_ca_certs="/ca.pem",
                     ssl_certfile="/c.pem", ssl_keyfile="/k.pem")
    env = {"REDIS_READER_PASSWORD": "r-secret", "REDIS_PUBLISHER_PASSWORD": "p-secret", "REDIS_PASSWORD": "other"}
    tls = {"ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"}
    assert rc.client_options("reader", env) == {"username": "reco-reader", "password": "r-secret", **tls}
    assert rc.client_options("publisher", env) == {"username": "reco-publisher", "password": "p-secret", **tls}
    assert rc.password_variable("reader") == "REDIS_READER_PASSWORD"


def test_without_users_both_roles_are_the_default_user_with_redis_password():
    rc = RedisConfig(url="redis://127.0.0.1:6390/0")
    assert rc.client_options("reader", {"REDIS_PASSWORD": "pw"}) == {"password": "pw"}
    assert rc.client_options("publisher", {}) == {"password": None}
    assert rc.password_variable("publisher") == "REDIS_PASSWORD"


def test_a_user_without_its_password_fails_naming_the_variable_not_a_value():
    rc = RedisConfig(url=TLS, reader_user="reco-reader", publisher_user="reco-publisher")
    with pytest.raises(ConfigError, match="REDIS_READER_PASSWORD is not set"):
        rc.client_options("reader", {"REDIS_PASSWORD": "unrelated-secret"})
    with pytest.raises(ValueError, match="unknown redis role"):
        rc.client_options("admin", {})


@pytest.mark.parametrize("fields, message", [
    ({"url": "redis://h:1/0", "ssl_ca_certs": "/ca.pem"}, "need a rediss:// url"),
    ({"url": TLS, "ssl_certfile": "/c.pem"}, "set both or neither"),
    ({"url": TLS, "reader_user": "reco", "publisher_user": "reco"}, "name two users"),
    ({"url": TLS, "reader_user": "reco reader"}, "should match pattern"),
    ({"url": "redis://h:1/0", "cluster": True, "embedded": True}, "not a Redis Cluster"),
    ({"url": "redis+cluster://h:1", "embedded": True}, "not a Redis Cluster"),
    ({"url": "redis+cluster://h:1", "ssl_ca_certs": "/ca.pem"}, "need a rediss:// url"),
])
def test_inconsistent_tls_or_user_settings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        RedisConfig(**fields)


@pytest.mark.parametrize("url, cluster, expected", [
    ("redis://h:7000/0", False, False),                # a plain server: connect gets no cluster argument
    ("redis://h:7000/0", True, True),                  # redis.cluster: true
    ("redis+cluster://h:7000", False, True),           # the url says so
    ("rediss+cluster://h:7000", False, True),
])
def test_a_cluster_named_by_the_setting_or_the_url_reaches_connect(url, cluster, expected):
    rc = RedisConfig(url=url, cluster=cluster, ssl_ca_certs="/ca.pem" if url.startswith("rediss") else None)
    assert rc.is_cluster is expected
    assert ("cluster" in rc.client_options("reader", {})) is expected
    assert rc.client_options("publisher", {}).get("cluster", False) is expected
