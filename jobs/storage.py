"""Where a batch's input files come from: a local path or ``s3://bucket/prefix``.

:func:`resolve_inputs` turns a source's ``path`` into a sorted list of
:class:`InputFile` that Spark can read from local disk:

* a local file, a folder (its files, recursively), or a glob pattern;
* ``s3://bucket/prefix``: the objects under the prefix, listed page by page and
  downloaded to ``<staging_dir>/<bucket>/<key>``. A download is skipped when the
  staged copy has the listed size and its ``<file>.etag`` sidecar holds the
  listed ETag, so re-running a batch does not fetch it again (:mod:`jobs.s3_inputs`).

Names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc``, ``_temporary/``)
below the given folder or prefix are skipped, as Spark skips them.

Every file is checked before Spark sees it (:func:`check_readable`): an empty
file, or a ``.gz`` whose stream is truncated or corrupt, fails the batch with
:class:`InputError` instead of silently yielding fewer rows.

:func:`batch_id_for` names the batch after the files' uris, sizes and ETags, so
re-ingesting the same files gives the same id.

:func:`unclaimed` picks a nightly batch's files from what the path lists: a file
belongs to the run date whose batch first took it (``jobs.ingested_files``), so
an accumulating folder or prefix yields each night only its new files.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import json
import logging
import os
import zlib
from dataclasses import dataclass
from datetime import date
from typing import List, Mapping, Optional, Tuple

from core.errors import InputError  # noqa: F401 (raised here; callers import it from here too)
from jobs.input_file import GZIP_CHUNK, InputFile, is_hidden
from jobs.s3_inputs import resolve_s3, s3_client

log = logging.getLogger(__name__)

_GLOB_CHARS = "*?["

def resolve_inputs(path: str, staging_dir: str, *, endpoint_url: Optional[str] = None,
                   region: str = "us-east-1", client=None) -> List[InputFile]:
    """Resolve a source's ``path`` to the local files Spark will read, each checked.

    Args:
        path: a local file, folder or glob pattern, or ``s3://bucket/prefix``.
        staging_dir: where S3 objects are downloaded to (unused for local paths).
        endpoint_url: an S3-compatible endpoint (``s3.endpoint_url`` in conf); None for AWS.
        region: the S3 region (``s3.region`` in conf).
        client: a boto3 S3 client to use instead of :func:`s3_client`'s (tests inject one).

    Returns:
        The files, sorted by uri; never empty.

    Raises:
        InputError: nothing found, a storage error, an empty file, or a broken gzip.
    """
    if path.startswith("s3://"):
        if client is None:
            client = s3_client(endpoint_url, region)
        files = resolve_s3(path, staging_dir, client)
    elif "://" in path:
        raise InputError(f"source path {path!r} uses an unsupported scheme; give a local path "
                         "(file, folder or glob) or s3://bucket/prefix")
    else:
        files = _resolve_local(path)
    for f in files:
        check_readable(f)
    log.info("resolved %s to %d file(s), %d bytes", path, len(files), sum(f.size for f in files))
    return files


def check_readable(f: InputFile) -> None:
    """Fail on an empty file, or on a ``.gz`` file whose stream is truncated or corrupt.

    A truncated gzip would otherwise be read by Spark up to the break (or fail
    deep inside a task), so the whole stream is decompressed once here.
    """
    if f.size == 0:
        raise InputError(f"input file {f.uri} is empty (0 bytes); re-export or re-upload it, "
                         "or remove it from the source's path")
    if not f.local_path.lower().endswith(".gz"):
        return
    try:
        raw = open(f.local_path, "rb")
    except OSError as exc:
        raise InputError(f"cannot open input file {f.local_path} ({exc.strerror}); "
                         "check that it exists and is readable") from None
    where = f.uri if f.uri == f.local_path else f"{f.uri} (staged at {f.local_path})"
    with raw, gzip.open(raw, "rb") as stream:
        try:
            while stream.read(GZIP_CHUNK):
                pass
        except EOFError:
            raise InputError(f"gzip file {where} is truncated (the stream ends before its end "
                             "marker); re-export or re-upload it") from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise InputError(f"gzip file {where} is corrupt ({exc}); re-export or re-upload it") from None


def batch_id_for(files: List[InputFile]) -> str:
    """A deterministic id for the batch: ``b-`` + 16 hex digits of a sha256 over
    each file's uri, size and ETag (order-insensitive). Local files have no ETag,
    so for them the id changes when a file is added, removed, renamed or resized.
    """
    if not files:
        raise InputError("a batch needs at least one input file")
    rows = sorted([f.uri, f.size, f.etag or ""] for f in files)
    digest = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode("utf-8")).hexdigest()
    return "b-" + digest[:16]


@dataclass(frozen=True)
class Claim:
    """The nightly batch that took a file: its run date, and the file's size and ETag then."""
    run_date: date
    batch_id: str
    size: int
    etag: Optional[str]


def unclaimed(files: List[InputFile], claims: Mapping[str, Claim],
              run_date: date) -> Tuple[List[InputFile], List[Tuple[InputFile, Claim]]]:
    """Split a nightly batch's listed files into (this run date's files, files of other run dates).

    A file (by uri) belongs to the run date whose batch first took it. This run date's files are the
    ones no other run date took, and its own (a rerun takes them again, in their current version). A
    file another run date took stays with it even when rewritten since: that is a correction of that
    night, which a rerun of that night takes; ingesting it here would count its rows twice.

    Args:
        files: what the source's path lists (:func:`resolve_inputs`).
        claims: uri -> :class:`Claim`, for files taken by nightly batches of the source.
        run_date: the batch's run date.
    """
    mine, others = [], []
    for f in files:
        claim = claims.get(f.uri)
        if claim is None or claim.run_date == run_date:
            mine.append(f)
        else:
            others.append((f, claim))
    return mine, others


def changed_since(f: InputFile, claim: Claim) -> bool:
    """Whether ``f`` differs (size or ETag) from the version its claiming batch took."""
    return (f.size, f.etag or None) != (claim.size, claim.etag or None)


# ---- local ----------------------------------------------------------------------------------

def _walk_files(folder: str) -> Tuple[List[str], int]:
    """Files under ``folder``, recursively, skipping hidden files and folders below it.
    Returns the files and how many hidden entries were skipped."""
    found, skipped = [], 0
    for here, dirs, names in os.walk(folder):
        skipped += sum(1 for d in dirs if is_hidden(d))
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        for name in names:
            if is_hidden(name):
                skipped += 1
            else:
                found.append(os.path.join(here, name))
    return found, skipped


def _resolve_local(path: str) -> List[InputFile]:
    target = os.path.abspath(os.path.expanduser(path))
    skipped = 0
    if any(c in path for c in _GLOB_CHARS):
        paths = []
        for match in glob.glob(target, recursive=True):
            if os.path.isdir(match):
                inner, n = _walk_files(match)
                paths += inner
                skipped += n
            elif is_hidden(os.path.basename(match)):
                skipped += 1
            else:
                paths.append(match)
        what = "the glob pattern"
    elif os.path.isfile(target):
        paths, what = [target], "the file"
    elif os.path.isdir(target):
        paths, skipped = _walk_files(target)
        what = "the folder"
    else:
        raise InputError(f"input path {target} does not exist; check the source's path in conf "
                         "(a file, a folder, a glob pattern or s3://bucket/prefix)")
    if not paths:
        hidden = f" ({skipped} hidden name(s) starting with '.' or '_' skipped)" if skipped else ""
        raise InputError(f"no input files found for {what} {target}{hidden}; check the source's path "
                         "in conf and that the export has landed")
    out = []
    for p in sorted(set(paths)):
        try:
            size = os.path.getsize(p)
        except OSError as exc:
            raise InputError(f"cannot read input file {p} ({exc.strerror}); check it exists and "
                             "is readable") from None
        out.append(InputFile(uri=p, local_path=p, size=size, etag=None))
    return out
