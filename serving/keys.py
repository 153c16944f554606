"""Redis key names of published recommendations.

One namespace (``reco`` by default) holds a few control keys and, per published
version, the data keys::

    reco:current                          -> version id readers use (one SET switches)
    reco:versions                         -> list of complete versions, newest first
    reco:rolled_back                      -> list of versions taken out by rollback, newest first
    reco:registry                         -> set of versions that may have keys (complete or not)
    reco:publish_lock                     -> held by the one publisher at work
    reco:{<version>:<shard>}:u:<user_id>  -> a user's ranked list
    reco:{<version>:<shard>}:s:<item_id>  -> items similar to an item
    reco:{<version>:<shard>}:i:<item_id>  -> item details (title, price, category)
    reco:{<version>:f}:f:<list_name>      -> fallback lists (global, segment:<name>, ...)
    reco:{<version>:m}:meta               -> hash: counts, model_version, run_id, complete=1, ...
    reco:stream:<name>                    -> the feedback loop's Redis Streams (impressions, feedback)

The ``{...}`` part is a Redis Cluster hash tag: a version's keys fall into
``n_shards`` slots (plus one for fallbacks and one for metadata), so the
publisher can MSET one shard's keys in one command on a cluster too, and all
keys of a version share the prefix ``reco:{<version>:`` that
:meth:`KeySpace.version_pattern` matches.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

KINDS = ("u", "s", "i", "f")
KIND_NAMES = {"u": "user lists", "s": "similar items", "i": "item details", "f": "fallback lists"}
MAX_ID_LENGTH = 256

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]{}^])")


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it can be part of a key, else raise ValueError saying why.

    An id is a non-empty printable string of at most 256 characters.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}: {value!r}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed "
                         f"(starts {value[:40]!r})")
    if not value.isprintable():
        raise ValueError(f"{what} {value!r} contains non-printable characters")
    return value


def check_version(version: str) -> str:
    """Return ``version`` if it is a valid version id (letters, digits, ``_ . -``; at most 64)."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise ValueError(f"version id {version!r} is invalid: use 1-64 letters, digits, '_', '.' or '-' "
                         "(e.g. 20261126-ab12cd34)")
    return version


def glob_escape(text: str) -> str:
    """Escape Redis glob specials (``* ? [ ] \\ ^``, and braces for safety) in ``text``."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


@dataclass(frozen=True)
class KeySpace:
    """Builds every key name; one instance per namespace.

    Args:
        namespace: prefix of all keys (letters, digits, ``_ . -``).
        n_shards: hash-tag groups per version. Changing it changes where a
            version's keys live, so readers and the publisher must agree; a
            version records its own value in its metadata.
    """
    namespace: str = "reco"
    n_shards: int = 256

    def __post_init__(self) -> None:
        if not _NAMESPACE_RE.match(self.namespace):
            raise ValueError(f"redis namespace {self.namespace!r} is invalid: use 1-64 letters, digits, "
                             "'_', '.' or '-'")
        if not 1 <= self.n_shards <= 16384:
            raise ValueError(f"n_shards must be in 1..16384, got {self.n_shards}")

    # control keys ---------------------------------------------------------
    @property
    def current(self) -> str:
        return f"{self.namespace}:current"

    @property
    def versions(self) -> str:
        return f"{self.namespace}:versions"

    @property
    def rolled_back(self) -> str:
        return f"{self.namespace}:rolled_back"

    @property
    def registry(self) -> str:
        return f"{self.namespace}:registry"

    @property
    def publish_lock(self) -> str:
        return f"{self.namespace}:publish_lock"

    def stream(self, name: str) -> str:
        """Key of the feedback loop's stream ``name`` (``feedback.impressions.stream``,
        ``feedback.events.stream``): ``<namespace>:stream:<name>``, so two deployments sharing a Redis
        under two namespaces never log into each other's streams."""
        if not isinstance(name, str) or not _NAMESPACE_RE.match(name):
            raise ValueError(f"stream name {name!r} is invalid: use 1-64 letters, digits, '_', '.' or '-' "
                             "(the key is <namespace>:stream:<name>)")
        return f"{self.namespace}:stream:{name}"

    # data keys ------------------------------------------------------------
    def shard(self, id_: str) -> int:
        """Shard of an id: crc32 of its UTF-8 bytes modulo ``n_shards``."""
        return zlib.crc32(id_.encode("utf-8")) % self.n_shards

    def group(self, version: str, kind: str, id_: str) -> str:
        """The hash tag content (``<version>:<shard>``, ``<version>:f``) a key belongs to."""
        if kind == "f":
            return f"{version}:f"
        return f"{version}:{self.shard(id_)}"

    def key(self, version: str, kind: str, id_: str) -> str:
        """Key of one record; ``kind`` is one of ``u s i f``."""
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
        return f"{self.namespace}:{{{self.group(version, kind, id_)}}}:{kind}:{id_}"

    def user(self, version: str, user_id: str) -> str:
        return self.key(version, "u", user_id)

    def similar(self, version: str, item_id: str) -> str:
        return self.key(version, "s", item_id)

    def item(self, version: str, item_id: str) -> str:
        return self.key(version, "i", item_id)

    def fallback(self, version: str, list_name: str) -> str:
        return self.key(version, "f", list_name)

    def meta(self, version: str) -> str:
        return f"{self.namespace}:{{{version}:m}}:meta"

    def version_pattern(self, version: str) -> str:
        """SCAN MATCH pattern of every key of ``version`` (data and metadata) and nothing else.

        Braces are not special in Redis globs, but they are escaped anyway; the
        version's own characters cannot be glob specials (see check_version),
        and the ``:`` after it stops ``v1`` from matching ``v10``.
        """
        check_version(version)
        return glob_escape(f"{self.namespace}:{{{version}:") + "*"

    def group_keys(self, version: str, kind: str, ids: Iterable[str]) -> Dict[str, List[Tuple[str, str]]]:
        """Group ``ids`` by hash tag: {tag: [(id, key), ...]}, for one MGET per slot."""
        groups: Dict[str, List[Tuple[str, str]]] = {}
        for id_ in ids:
            groups.setdefault(self.group(version, kind, id_), []).append((id_, self.key(version, kind, id_)))
        return groups
