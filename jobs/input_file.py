"""One input file of a batch, and what both the local and the S3 listing skip."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

GZIP_CHUNK = 1 << 20          # bytes read at a time when a .gz stream is checked


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


def is_hidden(name: str) -> bool:
    """``_SUCCESS``, ``.crc``, ``_temporary/``: names Spark skips, and so do we."""
    return name.startswith((".", "_"))
