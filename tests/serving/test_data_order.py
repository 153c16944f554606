"""Readers never move backwards in data time (issue 22, defects 1 and 5), against a real redis-server:
a nightly of a later day replaces a patch that reaches past its midnight, a backfill or a retried old
hour leaves readers where they are, and a retry after a rollback does not undo it."""
import pytest

from serving.publish import publish_version, rollback
from serving.versions import current_version, moves_back
from tests.serving.records import chunks, expected
from tests.serving.test_patch import patch_records


def nightly(r, ks, version, day, **kw):
    return publish_version(r, ks, version, chunks(version), {"run_date": day, "data_day": day},
                           expected=expected(), **kw)


def patch(r, ks, version, base, base_day, hour_end, **kw):
    # a patch's run_date is the day of its hour; data_day is its base's day
    return publish_version(r, ks, version, patch_records(version),
                           {"run_date": hour_end[:10], "data_day": base_day, "hour_end": hour_end},
                           base=base, **kw)


@pytest.mark.parametrize("current, new, back", [
    ({"data_day": "2026-10-29"}, {"data_day": "2026-10-28"}, True),             # a backfill
    ({"data_day": "2026-10-28"}, {"data_day": "2026-10-29"}, False),            # the next nightly
    # the next nightly, off a patch over the day before that reaches past the new day's midnight
    ({"data_day": "2026-10-28", "hour_end": "2026-10-30T01:00:00+00:00"}, {"data_day": "2026-10-29"}, False),
    ({"data_day": "2026-10-29", "hour_end": "2026-10-30T05:00:00+00:00"},         # a retried older hour
     {"data_day": "2026-10-29", "hour_end": "2026-10-30T03:00:00+00:00"}, True),
    ({"data_day": "2026-10-29", "hour_end": "2026-10-30T03:00:00+00:00"},
     {"data_day": "2026-10-29", "hour_end": "2026-10-30T05:00:00+00:00"}, False),
    ({"data_day": "2026-10-29", "hour_end": "2026-10-30T03:00:00+00:00"}, {"data_day": "2026-10-29"}, False),
    ({"run_date": "2026-10-30"}, {"data_day": "2026-10-29"}, False),            # no data_day: never compared
])
def test_moves_back_orders_by_the_nightly_day_then_the_patch_hour(current, new, back):
    assert moves_back(current, new) is back


def test_the_next_nightly_replaces_a_patch_past_its_midnight(r, ks):
    """Defect 1: the 01:10 patch of day D+1 (run_date D+1) made every later nightly look like a backfill."""
    nightly(r, ks, "n28", "2026-10-28")
    patch(r, ks, "n28.h1", "n28", "2026-10-28", "2026-10-30T01:00:00+00:00")
    res = nightly(r, ks, "n29", "2026-10-29")
    assert (res.held, res.skipped, current_version(r, ks)) == ("", False, "n29")


def test_a_backfill_or_an_older_hour_leaves_readers_where_they_are(r, ks):
    nightly(r, ks, "n28", "2026-10-28")
    nightly(r, ks, "n29", "2026-10-29")
    patch(r, ks, "n29.h5", "n29", "2026-10-29", "2026-10-30T05:00:00+00:00")
    old_hour = patch(r, ks, "n29.h3", "n29", "2026-10-29", "2026-10-30T03:00:00+00:00")
    assert old_hour.skipped and "later than n29.h3" in old_hour.held and old_hour.keys_written == 0
    backfill = nightly(r, ks, "n27", "2026-10-27")
    assert backfill.skipped and "a backfill" in backfill.held
    assert current_version(r, ks) == "n29.h5"
    assert not r.exists(ks.meta("n27")) and not r.exists(ks.meta("n29.h3"))   # nothing was loaded


def test_a_retry_after_a_rollback_does_not_undo_it_unless_restored(r, ks):
    """Defect 5: republishing the rolled-back version (a retried nightly) brought it back."""
    nightly(r, ks, "n28", "2026-10-28")
    nightly(r, ks, "n29", "2026-10-29")
    assert rollback(r, ks) == ("n29", "n28")
    retry = nightly(r, ks, "n29", "2026-10-29")
    assert retry.skipped and "rolled back" in retry.held and current_version(r, ks) == "n28"
    # the next hour patches what readers are on; the next nightly moves them on
    patch(r, ks, "n28.h1", "n28", "2026-10-28", "2026-10-30T01:00:00+00:00")
    assert current_version(r, ks) == "n28.h1"
    restored = nightly(r, ks, "n29", "2026-10-29", restore=True)
    assert not restored.held and current_version(r, ks) == "n29"


def test_a_rollback_still_holds_after_the_next_publish_pruned_the_rolled_back_version(r, ks):
    """Pruning deleted the rolled-back version's keys and its rolled_back entry, so a retry of its publish
    after the next hourly loaded it again and moved readers back onto it."""
    nightly(r, ks, "n28", "2026-10-28")
    nightly(r, ks, "n29", "2026-10-29")
    assert rollback(r, ks) == ("n29", "n28")
    patch(r, ks, "n28.h1", "n28", "2026-10-28", "2026-10-30T01:00:00+00:00", keep=1)
    assert not r.exists(ks.meta("n29"))                               # pruned: its keys are gone
    retry = nightly(r, ks, "n29", "2026-10-29")
    assert retry.skipped and "rolled back" in retry.held and current_version(r, ks) == "n28.h1"
