"""A/B assignment (config/experiments.py): shares as declared, sticky, independent between salts, control
for anonymous requests; mistakes in feedback.experiments refused with what is wrong."""
from datetime import date, datetime, timezone

import pytest

from config import ConfigError, load_config
from config.experiments import Experiment, bucket, live_experiment

IDS = [f"c{n}" for n in range(10_000)]


def experiment(**kw) -> Experiment:
    spec = dict(name="popular-test", salt="s1", control="champion", start=date(2026, 12, 7),
                variants=[dict(name="champion", share=0.5), dict(name="popular", share=0.3, serves="fallback"),
                          dict(name="other", share=0.2)])
    spec.update(kw)
    return Experiment.model_validate(spec)


def test_bucket_known_answer_and_range():
    # SHA-256(b"s1\0c0") starts with these 8 bytes; the bucket is them over 2**64
    import hashlib
    head = int.from_bytes(hashlib.sha256(b"s1\x00c0").digest()[:8], "big")
    assert bucket("s1", "c0") == head / 2 ** 64
    assert all(0 <= bucket("s1", c) < 1 for c in IDS)


def test_shares_over_10000_customers_are_the_declared_ones():
    e = experiment()
    got = {"champion": 0, "popular": 0, "other": 0}
    for c in IDS:
        got[e.assign(c).name] += 1
    # binomial sd at n=10,000 is at most 50 (0.5%): 4 sd is 2 points
    assert abs(got["champion"] / 1e4 - 0.5) < 0.02
    assert abs(got["popular"] / 1e4 - 0.3) < 0.02
    assert abs(got["other"] / 1e4 - 0.2) < 0.02


def test_assignment_is_sticky_and_the_salt_reshuffles():
    e = experiment()
    first = [e.assign(c).name for c in IDS]
    # the same customers again, another instance (another process, another night): the same variants
    assert [experiment().assign(c).name for c in IDS] == first
    # a new salt gives an independent split: about half the customers (0.5^2 + 0.3^2 + 0.2^2 = 38% stay)
    moved = sum(a != experiment(salt="s2").assign(c).name for a, c in zip(first, IDS))
    assert 0.55 < moved / 1e4 < 0.69


def test_anonymous_gets_the_control_variant():
    e = experiment(control="popular")
    assert e.assign(None).name == "popular" and e.assign("").name == "popular"


def test_an_experiment_runs_between_its_dates_utc():
    e = experiment(end=date(2026, 12, 21))
    at = lambda *ymdh: datetime(*ymdh, tzinfo=timezone.utc).timestamp()   # noqa: E731
    assert not e.live(at(2026, 12, 6, 23)) and e.live(at(2026, 12, 7, 0)) and e.live(at(2026, 12, 20, 23))
    assert not e.live(at(2026, 12, 21, 0))
    later = experiment(name="next", start=date(2026, 12, 21), end=None)
    assert live_experiment([e, later], at(2026, 12, 21, 0)) is later
    assert live_experiment([e, later], at(2026, 12, 1)) is None


EXPERIMENT = ("[{name: t1, salt: s, control: a, start: 2026-12-07, "
              "variants: [{name: a, share: 0.5}, {name: b, share: 0.5, serves: fallback}]}]")


def test_declared_in_the_feedback_section():
    [e] = load_config(env="local", environ={"RECO__FEEDBACK__EXPERIMENTS": EXPERIMENT}).feedback.experiments
    assert (e.name, e.control, [(v.name, v.share, v.serves) for v in e.variants]) == \
        ("t1", "a", [("a", 0.5, "personal"), ("b", 0.5, "fallback")])


@pytest.mark.parametrize("experiments,message", [
    (EXPERIMENT.replace("share: 0.5, serves", "share: 0.4, serves"), "shares add up to 0.9, not 1"),
    (EXPERIMENT.replace("control: a", "control: c"), "control 'c' is not one of its variants"),
    (EXPERIMENT.replace("name: b", "name: a"), "variant names repeat"),
    (EXPERIMENT.replace("salt: s, ", ""), "salt"),
    (EXPERIMENT.replace("serves: fallback", "serves: version:v2"), "serves"),
    (EXPERIMENT.replace("start: 2026-12-07", "start: 2026-12-07, end: 2026-12-07"), "end 2026-12-07 is not after"),
    (EXPERIMENT[:-1] + ", " + EXPERIMENT[1:-1].replace("t1", "t2") + "]", "t1 and t2 overlap in time"),
    (EXPERIMENT[:-1] + ", " + EXPERIMENT[1:-1].replace("2026-12-07", "2027-01-01") + "]", "declared twice"),
])
def test_mistakes_are_refused_naming_what_is_wrong(experiments, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env="local", environ={"RECO__FEEDBACK__EXPERIMENTS": experiments})
