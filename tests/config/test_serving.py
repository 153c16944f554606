"""The serving: section (config/serving.py): keys on in prod, the open demo only locally, mistakes refused."""
import pytest

from config import ConfigError, load_config


def test_prod_needs_api_keys_and_has_no_demo_local_is_the_open_demo():
    prod = load_config(env="prod", environ={}).serving
    assert (prod.auth.enabled, prod.demo, prod.cors_origins) == (True, False, [])
    assert {name: (spec.env, spec.scopes) for name, spec in prod.auth.keys.items()} == {
        "lookup": ("RECO_API_KEY_LOOKUP", ["lookup"]), "events": ("RECO_API_KEY_EVENTS", ["events"]),
        "admin": ("RECO_API_KEY_ADMIN", ["admin"])}
    local = load_config(env="local", environ={}).serving
    assert (local.auth.enabled, local.demo, local.host) == (False, True, "127.0.0.1")


def test_the_demo_with_keys_on_is_refused():
    with pytest.raises(ConfigError, match="serving.demo needs serving.auth.enabled: false"):
        load_config(env="prod", environ={"RECO__SERVING__DEMO": "true"})


@pytest.mark.parametrize("environ,message", [
    ({"RECO__SERVING__CORS_ORIGINS": "[https://shop.example.com/path]"}, "not an origin"),
    ({"RECO__SERVING__AUTH__KEYS__LOOKUP__SCOPES": "[lookup, everything]"}, "serving.auth.keys.lookup.scopes"),
    ({"RECO__SERVING__AUTH__KEYS__ADMIN__ENV": "RECO_API_KEY_LOOKUP"}, "used twice"),
    ({"RECO__SERVING__AUTH__KEYS__ADMIN__RATE_PER_S": "0"}, "serving.auth.keys.admin.rate_per_s"),
])
def test_mistakes_name_the_setting(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env="prod", environ=environ)


def test_cors_origins_come_from_config():
    cfg = load_config(env="prod", environ={"RECO__SERVING__CORS_ORIGINS": "[https://shop.example.com, http://localhost:3000]"})
    assert cfg.serving.cors_origins == ["https://shop.example.com", "http://localhost:3000"]
