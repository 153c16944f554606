"""The demo page's customer ids (serving.api.sampler), through GET /v1/demo/users: only ids of the
synthetic id space that the current version has lists for, never an id read from the store."""
from __future__ import annotations

import random

from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.api.sampler import DemoIds
from serving.codec import encode_list
from serving.publish import publish_version
from tests.serving.api.store import VERSION

ONE = encode_list(["A"], [1.0], ["model"])


def test_demo_ids_are_written_as_the_synthetic_generator_writes_them():
    # features/synthetic/events.py: "U" + the index zero-padded to max(6, digits of n_users - 1)
    assert DemoIds(20000).at(42) == "U000042"
    assert DemoIds(20_000_000).at(42) == "U00000042"
    assert sorted(DemoIds(3, "u", 1).draw(10, random.Random(1))) == ["u0", "u1", "u2"]


def test_demo_users_come_from_the_current_version(api):
    body = api.get("/v1/demo/users", params={"n": 10}).json()
    assert body["version"] == VERSION
    assert sorted(body["user_ids"]) == ["u1", "u2"]      # u0 is in the id space but has no list
    assert len(api.get("/v1/demo/users", params={"n": 1}).json()["user_ids"]) == 1


def test_demo_users_never_list_a_customer_outside_the_synthetic_id_space(r, ks, api):
    # Real customers (any id the synthetic source does not make) are never offered, even when they
    # are all the version holds; u0 (synthetic) is.
    publish_version(r, ks, "20261127-real", [[("u", "12345", ONE), ("u", "alice@example.com", ONE),
                                              ("u", "u00", ONE), ("u", "u0", ONE), ("f", "global", ONE)]],
                    metadata={})
    assert api.get("/v1/demo/users").json() == {"version": "20261127-real", "user_ids": ["u0"]}
    publish_version(r, ks, "20261128-real", [[("u", "12345", ONE), ("f", "global", ONE)]], metadata={})
    assert api.get("/v1/demo/users").json() == {"version": "20261128-real", "user_ids": []}


def test_demo_users_of_a_patch_include_its_base(r, ks, api):
    # The patch holds u0 only; its base (the tiny store) has u1 and u2.
    publish_version(r, ks, "20261127-patch", [[("u", "u0", ONE)]], metadata={}, base=VERSION)
    body = api.get("/v1/demo/users", params={"n": 10}).json()
    assert body["version"] == "20261127-patch"
    assert sorted(body["user_ids"]) == ["u0", "u1", "u2"]


def test_without_demo_mode_there_is_no_demo_page_nor_demo_users(published):
    with TestClient(create_app(published)) as api:
        assert api.get("/v1/demo/users").status_code == 404
        assert api.get("/").status_code == 404
        assert api.get("/static/app.js").status_code == 404
        assert "/v1/demo/users" not in api.get("/openapi.json").json()["paths"]
