"""Byte encodings of ranked lists, item details and metadata."""
import pytest

from serving.codec import (RankedList, decode_item, decode_list, decode_meta, encode_item, encode_list,
                           encode_meta)


def test_ranked_list_round_trip_rounds_scores_and_packs_known_tags():
    data = encode_list(["a", "b", "c"], [0.123456, 2, -1e-9], ["model", "buy_again", "pinned"])
    assert b'"t":"mbn"' in data                                  # one character per known tag
    assert decode_list(data) == RankedList(["a", "b", "c"], [0.1235, 2.0, -0.0], ["model", "buy_again", "pinned"])


def test_ranked_list_keeps_unknown_tags_and_unicode():
    data = encode_list(["é", "b"], [1.0, 0.5], ["model", "editorial"])
    assert decode_list(data) == RankedList(["é", "b"], [1.0, 0.5], ["model", "editorial"])
    assert decode_list(encode_list([], [], [])) == RankedList([], [], [])
    assert decode_list(encode_list(["a", "b"], [1, 1], "trending")).tags == ["trending", "trending"]


@pytest.mark.parametrize("items,scores,tags,msg", [
    (["a"], [float("nan")], ["model"], "finite"),
    (["a", "b"], [1.0], ["model", "model"], "as many"),
    ([1], [1.0], ["model"], "strings"),
])
def test_bad_ranked_lists_are_refused(items, scores, tags, msg):
    with pytest.raises(ValueError, match=msg):
        encode_list(items, scores, tags)


def test_unknown_list_format_is_refused():
    with pytest.raises(ValueError, match="format v2"):
        decode_list(b'{"v":2,"i":[],"s":[],"t":""}')
    with pytest.raises(ValueError, match="not an encoded ranked list"):
        decode_list(b"garbage")


def test_item_and_meta_round_trip():
    details = {"title": "Tasse „Kaffee“", "price": 3.5, "category": "kitchen"}
    assert decode_item(encode_item(details)) == details
    with pytest.raises(ValueError, match="unknown format"):
        decode_item(b"\x00abc")
    raw = {k.encode(): v.encode() for k, v in encode_meta({"count_u": 3, "run_id": "r1", "x": None}).items()}
    assert decode_meta(raw) == {"count_u": 3, "run_id": "r1"}
