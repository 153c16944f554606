"""jobs/storage.py: resolving a source's path to checked local files.

Local paths use files under tmp_path. S3 runs against moto's server mode on
127.0.0.1 (a real HTTP endpoint, so boto3's paging, errors and If-Match are
exercised end to end); each test gets its own bucket.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import uuid
from pathlib import Path

import pytest
from botocore.stub import Stubber
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

from jobs.storage import InputError, InputFile, batch_id_for, check_readable, resolve_inputs, s3_client

REGION = "us-east-1"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def gz(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"))


# About 1 MB of gzip that inflates to 2.7 MB, so check_readable needs several 1 MiB reads.
BIG_TEXT = "".join(f"{i},user{i % 997},item{i * 7919 % 10007}\n" for i in range(120_000))
BIG_GZ = gzip.compress(BIG_TEXT.encode("utf-8"), compresslevel=1)


# ---- local ----------------------------------------------------------------------------------

def test_local_file_is_itself_with_absolute_uri(tmp_path, monkeypatch):
    write(tmp_path / "events.csv", b"a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)

    files = resolve_inputs("events.csv", str(tmp_path / "staging"))

    p = str(tmp_path / "events.csv")
    assert files == [InputFile(uri=p, local_path=p, size=8, etag=None)]


def test_local_folder_is_recursive_sorted_and_skips_hidden(tmp_path):
    root = tmp_path / "export"
    write(root / "b.csv", b"b\n")
    write(root / "a.csv", b"a\n")
    write(root / "2024" / "c.csv", b"c\n")
    write(root / "_SUCCESS", b"")                         # Spark/Hadoop marker: skipped
    write(root / ".a.csv.crc", b"crc")                    # checksum file: skipped
    write(root / "2024" / ".partial.csv", b"x\n")         # hidden file in a subfolder: skipped
    write(root / "_temporary" / "0" / "d.csv", b"d\n")    # hidden folder: skipped with its files

    files = resolve_inputs(str(root), str(tmp_path / "staging"))

    assert [f.uri for f in files] == [str(root / "2024" / "c.csv"), str(root / "a.csv"), str(root / "b.csv")]
    assert all(f.local_path == f.uri and f.etag is None and f.size == 2 for f in files)


def test_local_folder_under_a_hidden_parent_is_still_read(tmp_path):
    # Only names below the given folder count as hidden; the staging dir itself is `_staging`.
    write(tmp_path / "_staging" / "x.csv", b"x\n")

    files = resolve_inputs(str(tmp_path / "_staging"), str(tmp_path / "staging"))

    assert [f.uri for f in files] == [str(tmp_path / "_staging" / "x.csv")]


def test_local_glob_matches_sorted_and_skips_hidden(tmp_path):
    write(tmp_path / "d" / "day=2" / "part-1.csv", b"2\n")
    write(tmp_path / "d" / "day=1" / "part-1.csv", b"1\n")
    write(tmp_path / "d" / "day=1" / "_part-2.csv", b"h\n")   # hidden: skipped
    write(tmp_path / "d" / "day=1" / "part-1.txt", b"t\n")    # does not match *.csv

    files = resolve_inputs(str(tmp_path / "d" / "day=*" / "*.csv"), str(tmp_path / "staging"))

    assert [f.uri for f in files] == [str(tmp_path / "d" / "day=1" / "part-1.csv"),
                                      str(tmp_path / "d" / "day=2" / "part-1.csv")]


def test_local_glob_matching_folders_takes_their_files(tmp_path):
    write(tmp_path / "d" / "day=1" / "a.csv", b"1\n")
    write(tmp_path / "d" / "day=1" / "_SUCCESS", b"")

    files = resolve_inputs(str(tmp_path / "d" / "day=*"), str(tmp_path / "staging"))

    assert [f.uri for f in files] == [str(tmp_path / "d" / "day=1" / "a.csv")]


def test_missing_local_path_names_it(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(InputError, match=re.escape(str(missing)) + ".*does not exist"):
        resolve_inputs(str(missing), str(tmp_path / "staging"))


def test_empty_folder_names_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "empty")) + ".*check the source's path"):
        resolve_inputs(str(tmp_path / "empty"), str(tmp_path / "staging"))


def test_folder_with_only_hidden_files_says_they_were_skipped(tmp_path):
    write(tmp_path / "out" / "_SUCCESS", b"")
    with pytest.raises(InputError, match=r"no input files.*1 hidden name"):
        resolve_inputs(str(tmp_path / "out"), str(tmp_path / "staging"))


def test_glob_without_matches_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(InputError, match=re.escape(pattern)):
        resolve_inputs(pattern, str(tmp_path / "staging"))


def test_zero_byte_file_is_refused(tmp_path):
    write(tmp_path / "d" / "a.csv", b"a\n")
    empty = write(tmp_path / "d" / "b.csv", b"")
    with pytest.raises(InputError, match=re.escape(str(empty)) + r" is empty \(0 bytes\)"):
        resolve_inputs(str(tmp_path / "d"), str(tmp_path / "staging"))


def test_truncated_gzip_is_refused(tmp_path):
    data = BIG_GZ
    cut = write(tmp_path / "events.csv.gz", data[: len(data) // 2])
    with pytest.raises(InputError, match=re.escape(str(cut)) + r" is truncated.*re-export or re-upload"):
        resolve_inputs(str(cut), str(tmp_path / "staging"))


def test_gzip_with_a_damaged_body_is_refused(tmp_path):
    data = bytearray(BIG_GZ)
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)   # zeroed bytes mid-stream
    bad = write(tmp_path / "events.csv.gz", bytes(data))
    with pytest.raises(InputError, match=re.escape(str(bad)) + r".*(corrupt|truncated)"):
        resolve_inputs(str(bad), str(tmp_path / "staging"))


def test_file_named_gz_that_is_not_gzip_is_refused(tmp_path):
    bad = write(tmp_path / "events.csv.gz", b"user,item\n1,2\n")
    with pytest.raises(InputError, match=re.escape(str(bad)) + " is corrupt"):
        resolve_inputs(str(bad), str(tmp_path / "staging"))


def test_valid_gzip_passes(tmp_path):
    data = BIG_GZ
    good = write(tmp_path / "events.csv.gz", data)

    files = resolve_inputs(str(good), str(tmp_path / "staging"))

    assert files == [InputFile(uri=str(good), local_path=str(good), size=len(data), etag=None)]
    check_readable(files[0])  # idempotent, no error


def test_unsupported_scheme_is_refused(tmp_path):
    with pytest.raises(InputError, match="s3a://bucket/x.*unsupported scheme"):
        resolve_inputs("s3a://bucket/x", str(tmp_path / "staging"))


# ---- batch id -------------------------------------------------------------------------------

def test_batch_id_is_deterministic_and_order_insensitive():
    a = InputFile("s3://b/k1", "/s/b/k1", 10, "e1")
    b = InputFile("s3://b/k2", "/s/b/k2", 20, "e2")

    bid = batch_id_for([a, b])

    assert re.fullmatch(r"b-[0-9a-f]{16}", bid)
    assert batch_id_for([b, a]) == bid
    # staging location does not matter, the source does
    assert batch_id_for([InputFile("s3://b/k1", "/elsewhere/k1", 10, "e1"), b]) == bid
    changed = {batch_id_for([InputFile("s3://b/k1", "/s/b/k1", 10, "e9"), b]),   # new etag
               batch_id_for([InputFile("s3://b/k1", "/s/b/k1", 11, "e1"), b]),   # new size
               batch_id_for([InputFile("s3://b/k3", "/s/b/k1", 10, "e1"), b]),   # other object
               batch_id_for([a])}                                                # one file fewer
    assert bid not in changed and len(changed) == 4


def test_batch_id_of_no_files_is_refused():
    with pytest.raises(InputError):
        batch_id_for([])


# ---- S3 (moto server on 127.0.0.1) ----------------------------------------------------------

@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """A moto S3 server on a free local port; credentials only from the environment."""
    no_file = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_CONFIG_FILE", no_file)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", no_file)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")   # never probe 169.254.169.254
        for name in ("NO_PROXY", "no_proxy"):               # talk to 127.0.0.1 directly
            mp.setenv(name, "127.0.0.1,localhost")
        werkzeug = logging.getLogger("werkzeug")
        old_level = werkzeug.level
        werkzeug.setLevel(logging.WARNING)                 # no log line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()
            werkzeug.setLevel(old_level)


@pytest.fixture
def s3(endpoint):
    return s3_client(endpoint, REGION)


@pytest.fixture
def bucket(s3):
    name = f"landing-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def put(s3, bucket: str, key: str, data: bytes) -> str:
    """Upload and return the object's ETag (an MD5 for a single-part upload)."""
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return hashlib.md5(data).hexdigest()


def count_calls(client, operation: str) -> list:
    """Record each call of ``operation`` (e.g. GetObject) the client makes."""
    calls: list = []

    def record(params, **_):
        calls.append(dict(params))   # returns None: the call goes ahead

    client.meta.events.register(f"before-parameter-build.s3.{operation}", record)
    return calls


def test_s3_prefix_is_listed_and_staged(s3, bucket, endpoint, tmp_path):
    staging = tmp_path / "staging"
    e_a = put(s3, bucket, "exports/a.csv", b"a\n1\n")
    e_b = put(s3, bucket, "exports/2024/b.csv.gz", gz("b\n2\n"))
    put(s3, bucket, "exports/", b"")                          # "folder" marker: skipped
    put(s3, bucket, "exports/_SUCCESS", b"")                  # hidden: skipped
    put(s3, bucket, "exports/_temporary/0/c.csv", b"c\n")     # hidden folder: skipped
    put(s3, bucket, "exports-old/z.csv", b"z\n")              # sibling prefix: not under exports/

    files = resolve_inputs(f"s3://{bucket}/exports", str(staging), endpoint_url=endpoint, region=REGION)

    assert files == [
        InputFile(f"s3://{bucket}/exports/2024/b.csv.gz",
                  str(staging / bucket / "exports" / "2024" / "b.csv.gz"), len(gz("b\n2\n")), e_b),
        InputFile(f"s3://{bucket}/exports/a.csv", str(staging / bucket / "exports" / "a.csv"), 4, e_a),
    ]
    assert Path(files[1].local_path).read_bytes() == b"a\n1\n"
    assert gzip.decompress(Path(files[0].local_path).read_bytes()) == b"b\n2\n"
    assert Path(files[1].local_path + ".etag").read_text() == e_a
    # nothing half-written is left beside the staged files
    assert sorted(p.name for p in (staging / bucket / "exports").iterdir()) == ["2024", "a.csv", "a.csv.etag"]


def test_s3_uri_naming_one_object_takes_just_it(s3, bucket, tmp_path):
    put(s3, bucket, "exports/a.csv", b"a\n")
    put(s3, bucket, "exports/a.csv.bak", b"old\n")

    files = resolve_inputs(f"s3://{bucket}/exports/a.csv", str(tmp_path / "staging"), client=s3)

    assert [f.uri for f in files] == [f"s3://{bucket}/exports/a.csv"]


def test_s3_restaging_downloads_only_what_changed(s3, bucket, tmp_path):
    staging = str(tmp_path / "staging")
    put(s3, bucket, "in/a.csv", b"a\n")
    put(s3, bucket, "in/b.csv", b"b\n")
    gets = count_calls(s3, "GetObject")
    first = resolve_inputs(f"s3://{bucket}/in/", staging, client=s3)
    mtimes = [os.stat(f.local_path).st_mtime_ns for f in first]
    assert len(gets) == 2

    second = resolve_inputs(f"s3://{bucket}/in/", staging, client=s3)

    assert second == first
    assert len(gets) == 2                                    # nothing downloaded again
    assert [os.stat(f.local_path).st_mtime_ns for f in second] == mtimes

    put(s3, bucket, "in/b.csv", b"B\n")                      # same size, new content and ETag
    third = resolve_inputs(f"s3://{bucket}/in/", staging, client=s3)

    assert [g["Key"] for g in gets[2:]] == ["in/b.csv"]      # only the changed object
    assert Path(third[1].local_path).read_bytes() == b"B\n"
    assert third[0] == first[0] and third[1].etag != first[1].etag


def test_s3_staged_file_without_matching_etag_sidecar_is_downloaded_again(s3, bucket, tmp_path):
    staging = str(tmp_path / "staging")
    put(s3, bucket, "in/a.csv", b"a\n")
    [f] = resolve_inputs(f"s3://{bucket}/in/", staging, client=s3)
    os.unlink(f.local_path + ".etag")                        # e.g. a crash before the sidecar landed
    gets = count_calls(s3, "GetObject")

    resolve_inputs(f"s3://{bucket}/in/", staging, client=s3)

    assert len(gets) == 1
    assert Path(f.local_path + ".etag").read_text() == f.etag


def test_s3_more_than_one_page_of_objects(s3, bucket, tmp_path):
    # ListObjectsV2 returns at most 1000 keys per page, so these 1002 objects take two pages.
    # To stay cheap, 1000 are hidden (listed, never downloaded) and seeded straight into the
    # server's in-process backend; listing and downloading still go over HTTP. Keys sort as
    # "p/0-first.csv" < "p/_tmp/..." < "p/z-last.csv", so the last real file is on page two.
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for i in range(1000):
        backend.put_object(bucket, f"p/_tmp/{i:04d}", b"h")
    put(s3, bucket, "p/0-first.csv", b"first\n")
    put(s3, bucket, "p/z-last.csv", b"last\n")
    lists = count_calls(s3, "ListObjectsV2")

    files = resolve_inputs(f"s3://{bucket}/p/", str(tmp_path / "staging"), client=s3)

    assert len(lists) == 2
    assert [f.uri for f in files] == [f"s3://{bucket}/p/0-first.csv", f"s3://{bucket}/p/z-last.csv"]
    assert Path(files[1].local_path).read_bytes() == b"last\n"


def test_s3_missing_bucket_names_uri_and_code(s3, tmp_path):
    uri = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/exports/"
    with pytest.raises(InputError, match=re.escape(uri) + r": NoSuchBucket.*check the bucket name"):
        resolve_inputs(uri, str(tmp_path / "staging"), client=s3)


def test_s3_empty_prefix_names_uri(s3, bucket, tmp_path):
    put(s3, bucket, "other/a.csv", b"a\n")
    uri = f"s3://{bucket}/exports/"
    with pytest.raises(InputError, match=re.escape(uri) + r".*check the prefix"):
        resolve_inputs(uri, str(tmp_path / "staging"), client=s3)


def test_s3_prefix_with_only_hidden_objects_says_so(s3, bucket, tmp_path):
    put(s3, bucket, "exports/_SUCCESS", b"")
    with pytest.raises(InputError, match=r"no objects found under .*1 hidden name"):
        resolve_inputs(f"s3://{bucket}/exports/", str(tmp_path / "staging"), client=s3)


def test_s3_access_denied_names_uri_code_and_fix(tmp_path):
    client = s3_client("http://127.0.0.1:1", REGION)          # never contacted: stubbed
    with Stubber(client) as stub:
        stub.add_client_error("list_objects_v2", service_error_code="AccessDenied",
                              service_message="Access Denied", http_status_code=403)
        with pytest.raises(InputError, match=r"s3://locked/exports/: AccessDenied.*s3:ListBucket"):
            resolve_inputs("s3://locked/exports/", str(tmp_path / "staging"), client=client)


def test_s3_without_credentials_says_which_variables_to_set(endpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(InputError, match=r"s3://any-bucket/x: NoCredentialsError.*AWS_ACCESS_KEY_ID"):
        resolve_inputs("s3://any-bucket/x", str(tmp_path / "staging"), endpoint_url=endpoint)


def test_s3_truncated_gzip_object_is_refused(s3, bucket, tmp_path):
    data = BIG_GZ
    put(s3, bucket, "exports/events.csv.gz", data[: len(data) // 2])
    with pytest.raises(InputError, match=re.escape(f"s3://{bucket}/exports/events.csv.gz") + r".*truncated"):
        resolve_inputs(f"s3://{bucket}/exports/", str(tmp_path / "staging"), client=s3)


def test_s3_empty_object_is_refused(s3, bucket, tmp_path):
    put(s3, bucket, "exports/a.csv", b"")
    with pytest.raises(InputError, match=re.escape(f"s3://{bucket}/exports/a.csv") + r" is empty \(0 bytes\)"):
        resolve_inputs(f"s3://{bucket}/exports/", str(tmp_path / "staging"), client=s3)


def test_s3_object_changed_during_staging_is_refused_and_leaves_no_file(s3, endpoint, bucket, tmp_path):
    put(s3, bucket, "exports/a.csv", b"v1\n")
    other = s3_client(endpoint, REGION)

    def upload_new_version(**_):
        # Between the listing and the download, someone uploads a new version.
        other.put_object(Bucket=bucket, Key="exports/a.csv", Body=b"v2\n")

    s3.meta.events.register("before-parameter-build.s3.GetObject", upload_new_version)
    staging = tmp_path / "staging"

    with pytest.raises(InputError, match=re.escape(f"s3://{bucket}/exports/a.csv") + r": PreconditionFailed"):
        resolve_inputs(f"s3://{bucket}/exports/", str(staging), client=s3)
    assert list((staging / bucket / "exports").iterdir()) == []


def test_s3_batch_id_is_stable_and_follows_object_changes(s3, bucket, tmp_path):
    uri = f"s3://{bucket}/exports/"
    put(s3, bucket, "exports/a.csv", b"a\n")
    put(s3, bucket, "exports/b.csv", b"b\n")

    first = batch_id_for(resolve_inputs(uri, str(tmp_path / "s1"), client=s3))
    again = batch_id_for(resolve_inputs(uri, str(tmp_path / "s2"), client=s3))   # other staging dir
    put(s3, bucket, "exports/b.csv", b"c\n")
    changed = batch_id_for(resolve_inputs(uri, str(tmp_path / "s1"), client=s3))

    assert again == first
    assert changed != first
