"""A source's ``s3://bucket/prefix``: its objects listed page by page and downloaded to
``<staging_dir>/<bucket>/<key>`` (skipped when the staged copy has the listed size and its ``<file>.etag``
sidecar holds the listed ETag), and every boto3 error turned into an :class:`InputError` that says what to do."""
from __future__ import annotations

import errno
import logging
import os
import tempfile
from typing import Iterator, List, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import InputError  # noqa: F401 (raised here; callers import it from here too)
from core.redact import redact_text
from jobs.input_file import GZIP_CHUNK, InputFile, is_hidden

log = logging.getLogger(__name__)

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
        if any(is_hidden(part) for part in key[len(folder):].split("/") if part):
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
            for chunk in body.iter_chunks(GZIP_CHUNK):
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


def resolve_s3(uri: str, staging_dir: str, client) -> List[InputFile]:
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
