"""The parts of push that need no store: URIs, Triton's URI form, the repository digest and what it covers."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.core.errors import MissingDependencyError, StorageError
from generator.core.repository import MANIFEST
from generator.core.uris import StorageURI, kserve_storage_uri, parse_uri, triton_uri
from generator.push.check import check_pushed
from generator.push.digest import file_hashes, manifest_hashes, repository_digest
from generator.push.run import _endpoint, push


def _repo(root: Path) -> Path:
    """A small hand-written repository: one ONNX-like model, one ensemble with an empty version directory."""
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text('name: "m"\n')
    (root / "m" / "1" / "model.onnx").write_bytes(b"onnx bytes")
    (root / "e" / "1").mkdir(parents=True)
    (root / "e" / "config.pbtxt").write_text('name: "e"\nplatform: "ensemble"\n')
    return root


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b/", StorageURI("s3", "bucket", "a/b")),
        ("s3://bucket", StorageURI("s3", "bucket", "")),
        ("gs://bkt/p", StorageURI("gs", "bkt", "p")),
        ("az://account/container/p/q", StorageURI("as", "container", "p/q", account="account")),
        ("as://acct.blob.core.windows.net/cnt", StorageURI("as", "cnt", "", account="acct")),
    ],
)
def test_parse_uri(uri: str, expected: StorageURI) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bucket/prefix", "not an object storage URI"),
        ("http://host/bucket", "not an object storage URI"),
        ("s3:/bucket", "not an object storage URI"),
        ("s3:///prefix", "names no bucket"),
        ("s3://bucket/p?x=1", "'p\\?x=1' in 's3://bucket/p\\?x=1' is not a path Triton reads back"),
        ("as://account", "names no container"),
        ("as://account/", "names no container"),
        ("s3://My_Bucket/p", "'My_Bucket' in 's3://My_Bucket/p' is not a bucket name"),
        ("gs://http:/p", "is not a bucket name"),
        ("s3://[::1/p", "is not an object storage URI"),
        ("as://Account/cnt", "'Account' in 'as://Account/cnt' is not an Azure storage account"),
        ("as://acct/a--b/p", "'a--b' in 'as://acct/a--b/p' is not an Azure container name"),
        ("s3://my_bucket/p", "'my_bucket' in 's3://my_bucket/p' is not a bucket name; S3 takes 3-63"),
    ],
)
def test_parse_uri_refuses_what_is_not_a_bucket_uri(uri: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as caught:
        parse_uri(uri)
    assert len(caught.value.problems) == 1


#: Prefixes Triton's object-storage paths cannot name: its S3 parser takes '/'-separated names of ASCII
#: letters, digits, '.', '-' and '_', collapses '//', and a '..' or percent-escape names another key.
_UNREADABLE_PREFIXES = [
    ("s3://bucket/../../etc", ".."),
    ("s3://bucket/fleet/./prod", "."),
    ("s3://bucket//double//slash", "//"),
    ("gs://bucket/a//b", "//"),
    ("s3://bucket/mod\u00e8les", "mod\u00e8les"),
    ("s3://bucket/%2e%2e/etc", "%2e%2e"),
    ("gs://bucket/a/%00", "%00"),
    ("s3://bucket/my%20models", "my%20models"),
    ("s3://bucket/a+b", "a+b"),
    ("as://acct/cnt/x/../y", ".."),
    ("as://acct/cnt/a#b", "a#b"),
    ("s3://bucket/a:b", "a:b"),
]


@pytest.mark.parametrize(("uri", "name"), _UNREADABLE_PREFIXES)
def test_a_prefix_triton_cannot_read_back_is_refused_in_one_line(uri: str, name: str) -> None:
    with pytest.raises(StorageError, match="is not a path Triton reads back") as caught:
        parse_uri(uri)
    (problem,) = caught.value.problems
    assert f"'{name}' in '{uri}'" in problem and "ASCII letters, digits, '.', '-' and '_'" in problem
    assert "\n" not in problem


def test_push_refuses_an_unreadable_prefix_before_reading_the_repository(tmp_path: Path) -> None:
    with pytest.raises(
        StorageError, match=r"'\.\.' in 's3://bkt/\.\./\.\./etc' is not a path Triton reads back"
    ):
        push(_repo(tmp_path / "repo"), "s3://bkt/../../etc")


def test_key_layout_joins_prefix_and_parts_without_empty_segments() -> None:
    assert StorageURI("s3", "b", "fleet/prod").key("abc", "m/config.pbtxt") == "fleet/prod/abc/m/config.pbtxt"
    assert StorageURI("s3", "b", "").key("abc") == "abc"


def test_triton_uri_for_aws_and_for_a_custom_endpoint() -> None:
    location = parse_uri("s3://models/fleet")
    assert triton_uri(location, "fleet/abc") == "s3://models/fleet/abc"
    assert (
        triton_uri(location, "fleet/abc", "http://127.0.0.1:9000")
        == "s3://http://127.0.0.1:9000/models/fleet/abc"
    )
    assert (
        triton_uri(location, "fleet/abc", "https://minio.local")
        == "s3://https://minio.local:443/models/fleet/abc"
    )
    with pytest.raises(StorageError, match="not an http"):
        triton_uri(location, "fleet/abc", "minio.local:9000")


@pytest.mark.parametrize("scheme", ["s3://bkt/p", "gs://bkt/p", "as://acct/cnt/p"])
@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [("http://[::1", "Invalid IPv6 URL"), ("http://[::1]:99999", "bad port"), ("http://host:x", "bad port")],
)
def test_a_malformed_endpoint_is_refused_in_one_line(
    tmp_path: Path, scheme: str, endpoint: str, reason: str
) -> None:
    with pytest.raises(StorageError, match=re.escape(f"--endpoint-url '{endpoint}'")) as caught:
        push(_repo(tmp_path / "repo"), scheme, endpoint_url=endpoint)
    (problem,) = caught.value.problems
    assert reason in problem and "\n" not in problem


def test_a_malformed_endpoint_variable_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://[::1")
    with pytest.raises(StorageError, match=re.escape("AWS_ENDPOINT_URL 'http://[::1' is not an http")):
        push(_repo(tmp_path / "repo"), "s3://bkt/p")


def test_an_ipv6_s3_endpoint_is_refused_since_tritons_s3_form_cannot_name_it() -> None:
    with pytest.raises(StorageError, match=r"host name or IPv4 address, not '::1'") as caught:
        triton_uri(parse_uri("s3://models/fleet"), "fleet/abc", "http://[::1]:9000")
    assert len(caught.value.problems) == 1
    assert (
        triton_uri(parse_uri("gs://models/fleet"), "fleet/abc", "http://[::1]:4443")
        == "gs://models/fleet/abc"
    )


def test_digest_covers_every_file_and_empty_directory(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    hashes = file_hashes(repo)
    assert hashes == {
        "e/config.pbtxt": _sha(b'name: "e"\nplatform: "ensemble"\n'),
        "m/1/model.onnx": _sha(b"onnx bytes"),
        "m/config.pbtxt": _sha(b'name: "m"\n'),
    }
    digest = repository_digest(hashes, ["e/1"])
    assert len(digest) == 16 and digest == repository_digest(dict(reversed(hashes.items())), ["e/1"])
    assert digest != repository_digest(hashes, [])
    (repo / "m" / "1" / "model.onnx").write_bytes(b"other bytes")
    assert repository_digest(file_hashes(repo), ["e/1"]) != digest


def test_caches_a_server_writes_are_not_part_of_the_repository(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    before = file_hashes(repo)
    (repo / "m" / "1" / "__pycache__").mkdir()
    (repo / "m" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    assert file_hashes(repo) == before


def test_the_manifest_hashes_are_used_for_the_files_it_records(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    recorded = {
        "models": {
            "m": {
                "config_sha256": "c" * 64,
                "sample_files": {"perf_analyzer_data.json": "d" * 64},
                "versions": {"1": {"files": {"model.onnx": "a" * 64}}},
            }
        }
    }
    (repo / MANIFEST).write_text(json.dumps(recorded))
    assert manifest_hashes(repo) == {
        "m/config.pbtxt": "c" * 64,
        "m/perf_analyzer_data.json": "d" * 64,
        "m/1/model.onnx": "a" * 64,
    }
    hashes = file_hashes(repo)
    assert hashes["m/1/model.onnx"] == "a" * 64 and hashes["m/config.pbtxt"] == "c" * 64  # not re-read
    assert hashes["e/config.pbtxt"] == _sha(b'name: "e"\nplatform: "ensemble"\n')  # not recorded: hashed
    assert hashes[MANIFEST] == _sha((repo / MANIFEST).read_bytes())
    (repo / MANIFEST).write_text("not json")
    assert manifest_hashes(repo) == {}


def test_push_refuses_a_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        push(tmp_path / "absent", "s3://bkt/p")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="has no files"):
        push(tmp_path / "empty", "s3://bkt/p")


def test_triton_uri_for_gcs_and_azure_names_no_endpoint() -> None:
    assert (
        triton_uri(parse_uri("gs://models/fleet"), "fleet/abc", "http://127.0.0.1:4443")
        == "gs://models/fleet/abc"
    )
    azure = parse_uri("as://acct/models/fleet")
    assert triton_uri(azure, "fleet/abc", "http://127.0.0.1:10000/acct") == "as://acct/models/fleet/abc"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://models/fleet/abc", "s3://models/fleet/abc"),
        ("s3://http://127.0.0.1:9000/models/fleet/abc", "s3://models/fleet/abc"),
        ("gs://models/fleet/abc/", "gs://models/fleet/abc"),
        ("as://acct/models/fleet/abc", "https://acct.blob.core.windows.net/models/fleet/abc"),
        ("az://acct.blob.core.windows.net/models", "https://acct.blob.core.windows.net/models"),
    ],
)
def test_kserve_storage_uri(uri: str, expected: str) -> None:
    assert kserve_storage_uri(uri) == expected


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"CLOUD_STORAGE_EMULATOR_ENDPOINT": "http://127.0.0.1:4443/"}, "http://127.0.0.1:4443"),
        ({"STORAGE_EMULATOR_HOST": "127.0.0.1:4443"}, "http://127.0.0.1:4443"),
        ({}, None),
    ],
)
def test_a_gcs_emulator_is_taken_from_the_variables_of_gcs_tools(
    monkeypatch: pytest.MonkeyPatch, variables: dict, expected: str | None
) -> None:
    for name in ("CLOUD_STORAGE_EMULATOR_ENDPOINT", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert _endpoint("gs", None) == expected
    assert _endpoint("as", None) is None  # Azure's endpoint comes from its connection string, not a variable


@pytest.mark.parametrize(
    ("uri", "module", "extra"),
    [
        ("s3://bkt/p", "boto3", "s3"),
        ("gs://bkt/p", "google.cloud.storage", "gcs"),
        ("as://acct/cnt/p", "azure.storage.blob", "azure"),
    ],
)
def test_push_without_the_stores_library_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match=rf"tritongen\[{extra}\]"):
        push(_repo(tmp_path / "repo"), uri)


@pytest.mark.parametrize(
    ("uri", "module", "extra"),
    [
        ("s3://http://127.0.0.1:9/bkt/p/0123", "boto3", "s3"),
        ("gs://bkt/p/0123", "google.cloud.storage", "gcs"),
        ("as://acct/cnt/p/0123", "azure.storage.blob", "azure"),
    ],
)
def test_checking_a_push_without_the_stores_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, uri: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(
        MissingDependencyError, match=rf"check that a push to .* completed.*tritongen\[{extra}\]"
    ):
        check_pushed(uri)


def test_checking_a_push_refuses_a_bad_uri_or_emulator_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(StorageError, match="is not a path Triton reads back"):
        check_pushed("s3://http://127.0.0.1:9/bkt/a//b")
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", "http://[::1")
    with pytest.raises(StorageError, match=re.escape("CLOUD_STORAGE_EMULATOR_ENDPOINT 'http://[::1' is not")):
        check_pushed("gs://bkt/p")


def test_push_needs_at_least_one_job(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="--jobs must be at least 1, not 0"):
        push(_repo(tmp_path / "repo"), "s3://bkt/p", jobs=0)


_URI_PARTS = st.sampled_from(["s3", "gs", "as", "az", "S3", "http", "", "s3:", "file"])
_URI_TAIL = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
#: Names Triton's path parsers take as they are, and names they read as another key or not at all.
_READ_BACK = ("fleet", "v1.2", "model_repo", "a-b", "0123", "...")
_NOT_READ_BACK = (".", "..", "", "%2e%2e", "%00", "%20", "+", "\u00e8", "?x", "#f", ":", "\\", "~", "@", "*")
_PATH_NAME = st.sampled_from([*_READ_BACK, *_NOT_READ_BACK, "=", "'", '"', "a b", "\t", "\x7f"])
_PATH_TAIL = st.builds(
    lambda where, names, end: where + "/" + "/".join(names) + end,
    st.sampled_from(["bucket", "acct/cnt", "bucket.example", "b_c", "127.0.0.1:9000/bucket"]),
    st.lists(_PATH_NAME, max_size=6),
    st.sampled_from(["", "/", "//"]),
)
#: Triton core's S3 path pattern (S3FileSystem in src/filesystem/implementations/s3.h): the strictest of
#: its object-storage parsers, and the one a URI at an endpoint must match whole.
_TRITON_S3_PATH = re.compile(
    r"s3://(http://|https://|)([0-9a-zA-Z\-.]+):([0-9]+)/([0-9a-z.\-]+)(((/[0-9a-zA-Z.\-_]+)*)?)"
)


@settings(max_examples=800, deadline=None)
@given(
    scheme=_URI_PARTS,
    separator=st.sampled_from(["://", ":/", ":", "//", "://http://"]),
    tail=st.one_of(_URI_TAIL, _PATH_TAIL),
)
def test_any_uri_parses_or_fails_with_one_storage_error(scheme: str, separator: str, tail: str) -> None:
    uri = f"{scheme}{separator}{tail}"
    for function in (parse_uri, kserve_storage_uri):
        try:
            result = function(uri)
        except StorageError as error:
            assert len(error.problems) == 1 and "\n" not in error.problems[0]
            continue
        if function is parse_uri:
            assert result.scheme in ("s3", "gs", "as") and result.bucket
            assert not result.prefix.startswith("/") and not result.prefix.endswith("/")
            # What push accepts, Triton reads back at the same key: its S3 pattern matches the pushed URI
            # whole, and no name is one its parsers collapse or resolve ('//', '.', '..').
            pushed = triton_uri(
                StorageURI("s3", "bucket", result.prefix),
                result.key("0123456789abcdef"),
                "http://127.0.0.1:9",
            )
            assert _TRITON_S3_PATH.fullmatch(pushed), pushed
            assert "//" not in result.prefix and not {".", ".."} & set(result.prefix.split("/"))
        else:
            assert result.startswith(("s3://", "gs://", "https://"))


@settings(max_examples=300, deadline=None)
@given(endpoint=_URI_TAIL)
def test_any_gcs_emulator_variable_is_taken_or_refused_in_one_line(endpoint: str) -> None:
    from generator.core.errors import ServerError
    from generator.serve.launch import (
        _remote_endpoint,  # the parsing; connecting is tested against a real emulator
    )

    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", endpoint.replace("\x00", ""))
        try:
            found = _remote_endpoint("gs://bucket/prefix")
        except ServerError as error:
            assert len(error.problems) == 1
        else:
            assert found is None or (found[1] and 0 <= found[2] < 65536)
