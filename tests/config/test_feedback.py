"""The feedback: section (config/feedback.py): stream names, keyed in redis.namespace."""
import pytest

from config import ConfigError, load_config
from serving.keys import KeySpace


def test_the_streams_are_names_keyed_in_the_redis_namespace():
    cfg = load_config(env="local", environ={"RECO__REDIS__NAMESPACE": "shop2"})
    assert (cfg.feedback.impressions.stream, cfg.feedback.events.stream) == ("impressions", "feedback")
    ks = KeySpace(cfg.redis.namespace)       # what the service, the drain and the ACL key them with
    assert [ks.stream(s) for s in ("impressions", "feedback")] == ["shop2:stream:impressions", "shop2:stream:feedback"]


def test_a_whole_key_as_the_stream_is_refused_with_what_to_write():
    with pytest.raises(ConfigError, match=r"feedback.impressions.stream.*now written impressions"):
        load_config(env="local", environ={"RECO__FEEDBACK__IMPRESSIONS__STREAM": "reco:stream:impressions"})
