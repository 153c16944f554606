"""Built-in synthetic retail data: a catalog and an event stream that look like retail.

Everything is generated inside Spark from ``spark.range``: events are never
materialised on the driver, and every random draw is a uniform derived from
``xxhash64(seed, draw, row keys)``, so the same parameters give the same rows
whatever the partitioning (``F.rand`` would depend on it). The only driver-side
tables are small constants (hour-of-window weights, vocabulary) that travel as
SQL array literals; items are laid out so that an event finds its item by
arithmetic, without a join.

What is modelled:
    * items: 16 categories of unequal size, titles "ADJECTIVE COLOUR NOUN",
      log-normal prices per category with charm endings (x.99), ~3% unavailable,
      20% launched during the window (``first_seen`` after ``start_date``; no
      event before it), the rest up to two years before it;
    * popularity: Zipf(``popularity_exponent``) over each item's rank in its
      category, so a few items take most of the traffic; ids are a fixed shuffle
      of ranks;
    * users: a segment each, with three preferred categories that take ~70% of
      the segment's views; a fixed country, the first of ``countries`` dominant;
      heavy-tailed activity (a few users have many sessions);
    * sessions: start times with daily (evening peak) and weekly (weekend peak)
      seasonality and a mild upward trend; geometric length (mean 5 views);
      some viewed items are carted, some carted ones bought at checkout (same
      session id, later timestamps); anonymous visitors (~4% of sessions) only view;
    * returns: ``return_rate`` of purchases come back 2-14 days later with the
      same user, item, quantity and price;
    * prices: items go on sale (-20%) in some weeks; events carry the price of
      the week the session started.

Events past ``start_date + days`` (late returns, sessions running over midnight
of the last day) are dropped, so the row count is ``n_events`` within a few %.

The modules: ``params`` (the parameters and every constant), ``draws`` (deterministic random columns),
``catalog`` (the items) and ``events`` (users and the event stream).
"""
from __future__ import annotations
from features.synthetic.catalog import generate_catalog
from features.synthetic.events import generate_events, user_segments
from features.synthetic.params import RETURN_SPAN_S, SESSION_SPAN_S, SyntheticParams

__all__ = ["RETURN_SPAN_S", "SESSION_SPAN_S", "SyntheticParams", "generate_catalog", "generate_events", "user_segments"]
