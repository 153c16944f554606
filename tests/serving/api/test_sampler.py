"""The demo page's customer ids (serving.api.sampler), through GET /v1/demo/users."""
from __future__ import annotations

from serving.codec import encode_list
from serving.publish import publish_version
from tests.serving.api.store import VERSION


def test_demo_users_come_from_the_current_version(api):
    body = api.get("/v1/demo/users", params={"n": 10}).json()
    assert body["version"] == VERSION
    assert sorted(body["user_ids"]) == ["u1", "u2"]
    assert len(api.get("/v1/demo/users", params={"n": 1}).json()["user_ids"]) == 1


def test_demo_users_ignore_other_versions(r, ks, api):
    # An older version's users must not be offered: they would be answered from the current one.
    # An item id containing "}:u:" makes its similar-items key match the SCAN pattern too: not a user.
    one = encode_list(["A"], [1.0], ["model"])
    publish_version(r, ks, "20261127-next", [[("u", "u9", one), ("s", "x}:u:y", one), ("f", "global", one)]],
                    metadata={})
    assert api.get("/v1/demo/users").json() == {"version": "20261127-next", "user_ids": ["u9"]}


def test_demo_users_of_a_patch_are_topped_up_from_its_base_without_repeats(r, ks, api):
    # The patch holds u1 (also in its base) and u9 only; its base (the tiny store) has u1 and u2.
    one = encode_list(["A"], [1.0], ["model"])
    publish_version(r, ks, "20261127-patch", [[("u", "u1", one), ("u", "u9", one)]], metadata={}, base=VERSION)
    body = api.get("/v1/demo/users", params={"n": 10}).json()
    assert body["version"] == "20261127-patch"
    assert sorted(body["user_ids"][:2]) == ["u1", "u9"]       # the patch's own first
    assert body["user_ids"][2:] == ["u2"]                       # then its base's, u1 not twice
    assert sorted(api.get("/v1/demo/users", params={"n": 2}).json()["user_ids"]) == ["u1", "u9"]   # enough
