"""The state of published versions: which is current, listed, rolled back, complete or not, a patch
over which base, and where each sits in data time (read here; nothing in this module writes).

A version is *complete* when its metadata hash says ``complete=1``; only
complete versions are ever put in ``{ns}:versions`` or behind ``{ns}:current``.
``{ns}:registry`` names every version that may still have keys (complete, rolled
back, or left half-loaded by a killed publish), so cleanup never needs KEYS.

Rollback points readers at the next older complete version, takes the
rolled-back one out of ``{ns}:versions`` (so a second rollback goes one further
back) and records it at the head of ``{ns}:rolled_back``. Its keys stay until
the next successful publish prunes them; publishing the same version id again
before that brings it back without reloading.

A *patch* (an hourly overlay) is a version whose metadata names a ``base``: a
complete full (nightly) version that readers fall back to for every record the
patch lacks. A patch is worthless without its base, so pruning always keeps the
bases of the versions it keeps, deleting a base that a kept patch or the
current version sits on is refused, and rollback only lands on a patch whose
base is complete.

Who writes that state: the publish lock (:mod:`serving.publish_lock`), the switch after a
publish and rollback (:mod:`serving.switch`), deleting and pruning versions
(:mod:`serving.cleanup`), loading a version (:mod:`serving.publish`).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import redis

from serving.codec import decode_meta, maybe_decode_str
from serving.keys import KeySpace


def read_meta(r: redis.Redis, ks: KeySpace, version: str) -> Dict[str, Any]:
    """A version's metadata ({} when it has none)."""
    return decode_meta(r.hgetall(ks.meta(version)))


def is_complete(meta: Dict[str, Any]) -> bool:
    return meta.get("complete") == 1


def current_version(r: redis.Redis, ks: KeySpace) -> Optional[str]:
    return maybe_decode_str(r.get(ks.current))


def base_of(meta: Dict[str, Any]) -> Optional[str]:
    """The base a patch's metadata names; None for a full version."""
    return meta.get("base") or None


def read_bases(r: redis.Redis, ks: KeySpace, versions: Iterable[str]) -> Dict[str, Optional[str]]:
    """{version: its base or None} for ``versions``, in one pipeline."""
    names = list(versions)
    pipe = r.pipeline(transaction=False)
    for v in names:
        pipe.hget(ks.meta(v), "base")
    return {v: maybe_decode_str(b) or None for v, b in zip(names, pipe.execute())}


def is_usable(r: redis.Redis, ks: KeySpace, version: str) -> bool:
    """Whether readers can be pointed at ``version``: it is complete and, for a patch, so is its base."""
    meta = read_meta(r, ks, version)
    if not is_complete(meta):
        return False
    base = base_of(meta)
    return base is None or is_complete(read_meta(r, ks, base))


def _lrange(r: redis.Redis, key: str) -> List[str]:
    return [v.decode("utf-8") for v in r.lrange(key, 0, -1)]

def data_position(meta: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """Where a version sits in data time: (the nightly day its lists are built on, the end of the hour a
    patch brings them up to, or ``""`` for a full version). None for metadata without ``data_day``
    (versions published before it was recorded: they are never compared)."""
    day = meta.get("data_day")
    if not day:
        return None
    return str(day), str(meta.get("hour_end") or "")


def moves_back(current_meta: Dict[str, Any], new_meta: Dict[str, Any]) -> bool:
    """Whether pointing readers from the version of ``current_meta`` to one of ``new_meta`` would move
    them backwards in data time: a nightly of an older day than the one readers' lists are built on (a
    backfill), or a patch over the same day that ends at an earlier hour (a cleared or retried old hour).

    A nightly of a later day moves readers forward even off a patch that reaches past its midnight (the
    patch sits on an older day's model and features, and the next hour patches the new one); a full
    version of the same day (a rescore) is never a step back."""
    cur, new = data_position(current_meta), data_position(new_meta)
    if cur is None or new is None:
        return False
    if new[0] != cur[0]:
        return new[0] < cur[0]
    return bool(new[1]) and new[1] < cur[1]


def rolled_back_versions(r: redis.Redis, ks: KeySpace) -> List[str]:
    """The versions rolled back and not published again since, newest first."""
    return _lrange(r, ks.rolled_back)

def list_versions(r: redis.Redis, ks: KeySpace) -> List[Dict[str, Any]]:
    """Every version with keys in Redis, newest listed first: version, status, is_current, kind,
    base, meta.

    status is ``live`` (current), ``complete`` (can be rolled back to),
    ``rolled_back`` or ``incomplete`` (a publish that did not finish); kind is
    ``patch`` (an overlay on ``base``) or ``full`` (base None).
    """
    current = current_version(r, ks)
    listed = _lrange(r, ks.versions)
    rolled = set(_lrange(r, ks.rolled_back))
    others = sorted({v.decode("utf-8") for v in r.smembers(ks.registry)} - set(listed), reverse=True)
    names = listed + others
    pipe = r.pipeline(transaction=False)
    for v in names:
        pipe.hgetall(ks.meta(v))
    out = []
    for v, raw in zip(names, pipe.execute()):
        meta = decode_meta(raw)
        if v == current:
            status = "live"
        elif not is_complete(meta):
            status = "incomplete"
        elif v in rolled:
            status = "rolled_back"
        else:
            status = "complete"
        base = base_of(meta)
        out.append({"version": v, "status": status, "is_current": v == current,
                    "kind": "patch" if base else "full", "base": base, "meta": meta})
    return out
