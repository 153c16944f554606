"""Where a batch's input files come from: a local path or ``s3://bucket/prefix``.

:func:`resolve_inputs` turns a source's ``path`` into a sorted list of
:class:`InputFile` that Spark can read from local disk:

* a local file, a folder (its files, recursively), or a glob pattern;
* ``s3://bucket/prefix``: the objects under the prefix, listed page by page and
  downloaded to ``<staging_dir>/<bucket>/<key>``. A download is skipped when the
  staged copy has the listed size and its ``<file>.etag`` sidecar holds the
  listed ETag, so re-running a batch does not fetch it again.

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

import errno
import glob
import gzip
import hashlib
import json
import logging
import os
import tempfile
import zlib
from dataclasses import dataclass
from datetime import date
from typing import Iterator, List, Mapping, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import InputError  # noqa: F401 (raised here; callers import it from here too)
from core.redact import redact_text

log = logging.getLogger(__name__)

_GZIP_CHUNK = 1 << 20
_GLOB_CHARS = "*?["

# What to do about an S3 error, by boto3 error code.
_S3_HINTS = {
    "NoSuchBucket": "check the bucket name in the source's path (and s3.endpoint_url for an "
                    "S3-compatible store)",
    "AccessDenied": "grant the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                    "s3:ListBucket on the bucket and s3:GetObject on its objects",
    "AllAccessDisabled": "the bucket is disabled; ask its owner",
    "InvalidAccessKeyId": "AWS_ACCESS_KEY_ID is not a valid key for this endpoint; fix the environment",
    "SignatureDoesNotMatch": "AWS_SECRET_ACCESS_KEY does not match AWS_ACCESS_KEY_ID; fix the environment",
    "ExpiredToken": "the session token in AWS_SESSION_TOKEN has expired; refresh the credentials",
    "PermanentRedirect": "the bucket lives in another region; set s3.region in conf to the bucket's region",
    "AuthorizationHeaderMalformed": "the bucket lives in another region; set s3.region in conf to the "
                                    "bucket's region",
    "NoSuchKey": "the object was deleted while the batch was staged; re-run once the upload is complete",
    "PreconditionFailed": "the object changed while the batch was staged; re-run once the upload is complete",
    "NoCredentialsError": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
    "PartialCredentialsError": "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
    "EndpointConnectionError": "check s3.endpoint_url in conf and that the store is reachable",
}
_S3_DEFAULT_HINT = "check the path, the credentials (AWS_* environment variables) and s3.endpoint_url"


@dataclass(frozen=True)
class InputFile:
    """One file of a batch.

    Attributes:
        uri: the original location: a local absolute path or ``s3://bucket/key``.
        local_path: where Spark reads it (the same as ``uri`` for local files).
        size: size in bytes.
        etag: the S3 ETag (without quotes), or None for local files.
    """
    uri: str
    local_path: str
    size: int
    etag: Optional[str]


def s3_client(endpoint_url: Optional[str], region: str):
    """A boto3 S3 client for AWS or an S3-compatible store at ``endpoint_url``.

    Credentials are never passed in: boto3 reads the standard environment
    variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``). With an endpoint, path-style addressing is used, as
    for Spark's s3a (see ``jobs/spark.py``), since such stores rarely serve
    ``bucket.host`` names. A fresh session is used so the environment is read
    now, not whenever boto3's default session first cached it.
    """
    import boto3
    from botocore.config import Config as BotoConfig

    config = BotoConfig(
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = boto3.session.Session(region_name=region)
    return session.client("s3", endpoint_url=endpoint_url or None, config=config)


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
        files = _resolve_s3(path, staging_dir, client)
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
            while stream.read(_GZIP_CHUNK):
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

def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _walk_files(folder: str) -> Tuple[List[str], int]:
    """Files under ``folder``, recursively, skipping hidden files and folders below it.
    Returns the files and how many hidden entries were skipped."""
    found, skipped = [], 0
    for here, dirs, names in os.walk(folder):
        skipped += sum(1 for d in dirs if _is_hidden(d))
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        for name in names:
            if _is_hidden(name):
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
            elif _is_hidden(os.path.basename(match)):
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


# ---- S3 -------------------------------------------------------------------------------------

def _split_s3(uri: str) -> Tuple[str, str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise InputError(f"source path {uri!r} has no bucket; write it as s3://bucket/prefix")
    return bucket, prefix


def _s3_error(action: str, where: str, exc: Exception) -> InputError:
    """An :class:`InputError` for a boto3 error: what failed, where, the error code, what to do."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code") or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        if code == "403":
            code = "AccessDenied"
        detail = err.get("Message") or ""
    else:  # BotoCoreError: no credentials, endpoint unreachable, timeouts
        code, detail = type(exc).__name__, str(exc)
    hint = _S3_HINTS.get(code, _S3_DEFAULT_HINT)
    # a botocore message names the endpoint URL, which may carry credentials (s3.endpoint_url from the environment)
    return InputError(redact_text(f"cannot {action} {where}: {code}" + (f" ({detail})" if detail else "") + f"; {hint}"))


def _list_objects(client, bucket: str, prefix: str, uri: str) -> Iterator[dict]:
    """Every object under ``prefix``, page by page (ListObjectsV2 returns at most 1000 per page)."""
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error("list", uri, exc) from None


def _select_keys(objects: List[dict], prefix: str) -> Tuple[List[dict], int]:
    """Like a local path: a key equal to ``prefix`` is that one file; otherwise ``prefix`` is a
    folder, so ``s3://b/data`` takes ``data/x`` but not ``database/y``. Folder markers (keys
    ending in ``/``) and hidden names below the prefix are skipped. Returns (objects, skipped)."""
    exact = [o for o in objects if prefix and o["Key"] == prefix and not prefix.endswith("/")]
    if exact:
        return exact, 0
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    chosen, skipped = [], 0
    for obj in objects:
        key = obj["Key"]
        if not key.startswith(folder) or key.endswith("/"):
            continue
        if any(_is_hidden(part) for part in key[len(folder):].split("/") if part):
            skipped += 1
        else:
            chosen.append(obj)
    return chosen, skipped


def _staged_path(staging_dir: str, bucket: str, key: str, uri: str) -> str:
    root = os.path.abspath(os.path.join(staging_dir, bucket))
    local = os.path.abspath(os.path.join(root, key))
    if os.path.commonpath([root, local]) != root:
        raise InputError(f"object key {key!r} in {uri} would be staged outside {root}; "
                         "rename the object (no '..' or leading '/')")
    return local


def _read_sidecar(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None


def _write_atomic(target: str, write) -> None:
    """Write via a hidden temp file in the same folder, then os.replace, so ``target`` is
    either absent, the old file, or the complete new one."""
    folder, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _download(client, bucket: str, key: str, raw_etag: str, size: int, local: str, uri: str) -> None:
    """Fetch exactly the listed version (If-Match on the ETag) into ``local``, then record its ETag."""
    sidecar = local + ".etag"
    try:
        os.makedirs(os.path.dirname(local), exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create staging folder {os.path.dirname(local)} for {uri} "
                         f"({exc.strerror}); check lakehouse.staging_dir") from None
    # Drop the old sidecar first: a crash after the new file lands but before its sidecar is
    # written must not leave an old ETag vouching for new bytes.
    try:
        os.unlink(sidecar)
    except FileNotFoundError:
        pass

    def fetch(fh) -> None:
        try:
            body = client.get_object(Bucket=bucket, Key=key, IfMatch=raw_etag)["Body"]
            for chunk in body.iter_chunks(_GZIP_CHUNK):
                fh.write(chunk)
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error("download", uri, exc) from None
        if fh.tell() != size:
            raise InputError(f"downloaded {fh.tell()} bytes of {uri} but it was listed with {size}; "
                             "re-run once the upload is complete")

    try:
        _write_atomic(local, fetch)
        _write_atomic(sidecar, lambda fh: fh.write(raw_etag.strip('"').encode("utf-8")))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"no space left to stage {uri} in {os.path.dirname(local)}; free space "
                             "or point lakehouse.staging_dir elsewhere") from None
        raise InputError(f"cannot stage {uri} at {local} ({exc.strerror}); check "
                         "lakehouse.staging_dir") from None


def _resolve_s3(uri: str, staging_dir: str, client) -> List[InputFile]:
    bucket, prefix = _split_s3(uri)
    objects, skipped = _select_keys(list(_list_objects(client, bucket, prefix, uri)), prefix)
    if not objects:
        hidden = f" ({skipped} hidden name(s) starting with '.' or '_' skipped)" if skipped else ""
        raise InputError(f"no objects found under {uri}{hidden} (the listing succeeded but was "
                         "empty); check the prefix in the source's path and that the export has "
                         "been uploaded")
    out, fetched = [], 0
    for obj in sorted(objects, key=lambda o: o["Key"]):
        key, size, raw_etag = obj["Key"], int(obj["Size"]), obj["ETag"]
        etag = raw_etag.strip('"')
        obj_uri = f"s3://{bucket}/{key}"
        local = _staged_path(staging_dir, bucket, key, obj_uri)
        fresh = (os.path.isfile(local) and os.path.getsize(local) == size
                 and _read_sidecar(local + ".etag") == etag)
        if not fresh:
            _download(client, bucket, key, raw_etag, size, local, obj_uri)
            fetched += 1
        out.append(InputFile(uri=obj_uri, local_path=local, size=size, etag=etag))
    log.info("staged %s: %d object(s), %d downloaded, %d already staged, %d hidden skipped",
             uri, len(out), fetched, len(out) - fetched, skipped)
    return out
