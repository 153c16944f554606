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


def _encode_list_reference(items, scores, tags):
    """encode_list as it was before its numpy fast path: the bytes every stored list has."""
    import json
    import math
    from serving.codec import TAG_CODES
    n = len(items)
    tags = [tags] * n if isinstance(tags, str) else tags
    rounded = []
    for s in scores:
        f = float(s)
        assert math.isfinite(f)
        rounded.append(round(f, 4))
    try:
        t = "".join([TAG_CODES[x] for x in tags])
    except KeyError:
        t = [str(x) for x in tags]
    return json.dumps({"v": 1, "i": list(items), "s": rounded, "t": t}, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def test_encode_list_is_byte_identical_to_the_reference_on_random_lists():
    import random

    import numpy as np
    rng = random.Random(7)
    chars = ["a", "7", "B", " ", "é", "€", '"', "\\", "\n", "\x01", "\u2028"]
    # ties of the 4th decimal and their neighbours, negative zero, huge and tiny values, ints, bools
    special = [0.00005, 0.00015, 1.00005, 2.50005, -0.00005, 1e-9, -1e-9, 5e-324, 1e300, -1e20, 2 ** 60, 0, 1,
               True, 123456789.12345, 0.1 + 0.2]
    for trial in range(3000):
        n = rng.randrange(0, 40)
        items = ["".join(rng.choice(chars if rng.random() < 0.05 else chars[:4]) for _ in range(rng.randrange(1, 7)))
                 for _ in range(n)]
        kind = trial % 4
        if kind == 0:
            scores = [rng.uniform(-10, 10) for _ in range(n)]
        elif kind == 1:   # what scoring hands over: float32 scores as Python floats
            scores = (np.random.default_rng(trial).random(n).astype(np.float32) * 8).tolist()
        elif kind == 2:   # a float32 array as it is
            scores = np.random.default_rng(trial).random(n).astype(np.float32) * 1000
        else:
            scores = [rng.choice(special) for _ in range(n)]
        tags = rng.choice(["model", [rng.choice(["model", "popular", "buy_again", "editorial"]) for _ in range(n)]])
        assert encode_list(items, scores, tags) == _encode_list_reference(items, scores, tags), (items, scores)
