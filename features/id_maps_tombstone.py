"""Tombstones in the user id map, and where a customer id sits in the raw tables (Column -> Column).

A forgotten customer's ``user_index`` row keeps its ``idx`` but its ``user_id`` becomes a tombstone,
``forgotten:<HMAC-SHA256 of the id>`` (:mod:`core.pseudonym`). ``features.id_maps.new_id_rows`` numbers new ids
from the map's largest ``idx`` up and matches ids by string, so the index is never handed out again, and the
clear id is nowhere in the map. No real id is compared with a tombstone: a customer who comes back under the same
id is kept out at ingest (``jobs.forget.drop_forgotten``), not renumbered.
"""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

TOMBSTONE_PREFIX = "forgotten:"


def tombstone(digest: str) -> str:
    """The ``user_id`` a forgotten customer's ``user_index`` row carries: the prefix and their keyed hash."""
    return TOMBSTONE_PREFIX + digest


def is_tombstone(user_id: Column) -> Column:
    return user_id.startswith(TOMBSTONE_PREFIX)


def customer_id(raw: Column) -> Column:
    """A raw customer id column as silver spells it (``features.source_mapping.map_to_contract``): trimmed,
    blank as null, spreadsheet numbers (``17850.0``) as integers."""
    trimmed = F.trim(raw)
    return F.regexp_replace(F.when(trimmed == "", None).otherwise(trimmed), r"^(\d+)\.0+$", "$1")


def json_field(raw_json: Column, name: str) -> Column:
    """One raw column of a ``quarantine`` / ``excluded`` row's ``raw`` (the bronze row as a JSON object)."""
    return F.from_json(raw_json, T.MapType(T.StringType(), T.StringType())).getItem(name)


def line_names(line: Column, customer: Column, delimiter: str) -> Column:
    """Whether an unparsed line (``_corrupt_record``) has ``customer`` as one of its fields (quotes ignored):
    a malformed line cannot be split reliably, so any field equal to the id counts."""
    d = F.lit(delimiter)
    return F.coalesce(F.concat(d, F.regexp_replace(line, '"', ""), d).contains(F.concat(d, customer, d)),
                      F.lit(False))
