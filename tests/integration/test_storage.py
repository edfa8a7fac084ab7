"""push and serve from object storage: the example repository pushed to moto's S3 server on 127.0.0.1,
served from there by the real embedded Triton, its outputs over HTTP and gRPC equal to the local
repository's; an unchanged repository pushed again uploads nothing; a push interrupted before its manifest
is not served; bad URIs and endpoints fail in one line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from generator.core.errors import ServerError, StorageError
from generator.core.repository import MANIFEST
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer

from ..conftest import free_ports, run_cli
from ..example_outputs import assert_same_answers

pytestmark = pytest.mark.integration

boto3 = pytest.importorskip("boto3", reason="push needs boto3: pip install 'tritongen[s3]'")
moto_server = pytest.importorskip(
    "moto.server", reason="the S3 server for these tests: pip install 'moto[server]'"
)

BUCKET = "models"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port with one bucket, and AWS variables Triton reads."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            env.delenv(name, raising=False)
        port = find_free_port()
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            yield endpoint
        finally:
            server.stop()


@pytest.fixture(scope="module")
def pushed(example_repo: Path, s3_endpoint: str) -> object:
    from generator.push.run import push

    return push(example_repo, f"s3://{BUCKET}/fleet", endpoint_url=s3_endpoint)


def _keys(endpoint: str, prefix: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_push_lays_the_repository_out_under_its_digest(example_repo: Path, pushed, s3_endpoint: str) -> None:
    from generator.push.digest import file_hashes

    assert pushed.uri == f"s3://{s3_endpoint}/{BUCKET}/fleet/{pushed.digest}"
    keys = _keys(s3_endpoint, f"fleet/{pushed.digest}/")
    local = sorted(f"fleet/{pushed.digest}/{relative}" for relative in file_hashes(example_repo))
    assert [k for k in keys if not k.endswith("/")] == local
    assert f"fleet/{pushed.digest}/text_pipeline/1/" in keys  # the ensemble's empty version directory
    assert not any("__pycache__" in k for k in keys)
    assert pushed.uploaded[-1] == f"fleet/{pushed.digest}/{MANIFEST}"  # the manifest comes last
    assert sorted(pushed.uploaded) == keys and pushed.skipped == []


def test_a_second_push_of_an_unchanged_repository_uploads_nothing(
    example_repo: Path, pushed, s3_endpoint: str
) -> None:
    from generator.push.run import push

    again = push(example_repo, f"s3://{BUCKET}/fleet", endpoint_url=s3_endpoint)
    assert again.uri == pushed.uri and again.uploaded == []
    assert sorted(again.skipped) == sorted(pushed.uploaded)


def test_a_completed_push_is_known_by_its_manifest_and_a_missing_object_is_put_back(
    example_repo: Path, pushed, s3_endpoint: str
) -> None:
    from generator.push.run import push

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    heads: list[str] = []
    client.meta.events.register(
        "before-parameter-build.s3.HeadObject", lambda params, **_: heads.append(params["Key"])
    )
    again = push(example_repo, f"s3://{BUCKET}/fleet", endpoint_url=s3_endpoint, client=client)
    assert again.uploaded == [] and heads == [
        f"fleet/{pushed.digest}/{MANIFEST}"
    ]  # one HEAD, not one per object
    lost = f"fleet/{pushed.digest}/digits_cnn/config.pbtxt"
    client.delete_object(Bucket=BUCKET, Key=lost)
    repaired = push(example_repo, f"s3://{BUCKET}/fleet", endpoint_url=s3_endpoint, client=client)
    assert repaired.uploaded == [lost] and lost in _keys(s3_endpoint, f"fleet/{pushed.digest}/")


def test_a_changed_repository_goes_under_a_new_digest(
    example_repo: Path, pushed, s3_endpoint: str, tmp_path
) -> None:
    from generator.push.run import push

    copy = tmp_path / "repo"
    shutil.copytree(example_repo, copy)
    (copy / "text_postprocess" / "text_labels.txt").write_text("a\nb\nc\n")
    changed = push(copy, f"s3://{BUCKET}/fleet", endpoint_url=s3_endpoint)
    assert changed.digest != pushed.digest and changed.skipped == []
    assert _keys(s3_endpoint, f"fleet/{pushed.digest}/") == sorted(pushed.uploaded)  # the old one untouched


def test_a_repository_without_manifest_gets_a_marker_last(
    example_repo: Path, s3_endpoint: str, tmp_path
) -> None:
    from generator.push.run import push
    from generator.push.store import MARKER

    copy = tmp_path / "repo"
    shutil.copytree(example_repo, copy)
    (copy / MANIFEST).unlink()
    first = push(copy, f"s3://{BUCKET}/handwritten", endpoint_url=s3_endpoint)
    assert first.uploaded[-1] == f"handwritten/{first.digest}/{MARKER}"
    assert not any(k.endswith(MANIFEST) for k in first.uploaded)
    again = push(copy, f"s3://{BUCKET}/handwritten", endpoint_url=s3_endpoint)
    assert again.uploaded == [] and sorted(again.skipped) == sorted(first.uploaded)


def test_served_from_s3_equals_the_local_repository(example_server, pushed) -> None:
    with EmbeddedServer(pushed.uri, **free_ports()) as remote:
        assert_same_answers(example_server, remote)


def test_bad_uris_and_endpoints_fail_in_one_line(example_repo: Path, s3_endpoint: str) -> None:
    from generator.push.run import push

    cases = {
        "models/fleet": "not an object storage URI",
        "s3:///fleet": "names no bucket",
        "as://account": "names no container",
    }
    for uri, expected in cases.items():
        with pytest.raises(StorageError, match=expected) as caught:
            push(example_repo, uri, endpoint_url=s3_endpoint)
        assert len(caught.value.problems) == 1
    with pytest.raises(StorageError, match="bucket 'absent' does not exist"):
        push(example_repo, "s3://absent/fleet", endpoint_url=s3_endpoint)
    closed = f"http://127.0.0.1:{find_free_port()}"
    with pytest.raises(StorageError, match=f"could not reach {closed}"):
        push(example_repo, f"s3://{BUCKET}/fleet", endpoint_url=closed)


def test_serving_a_prefix_with_no_repository_fails_in_one_line(s3_endpoint: str) -> None:
    uri = f"s3://{s3_endpoint}/{BUCKET}/nothing-here"
    with pytest.raises(
        StorageError, match=re.escape(f"nothing is stored under {uri}; push the repository")
    ) as caught:
        EmbeddedServer(uri, startup_timeout=60, **free_ports()).start()
    assert len(caught.value.problems) == 1


def _interrupted_push(example_repo: Path, s3_endpoint: str, prefix: str) -> str:
    """Push the example with the connection lost on the manifest, the last object; return the printed URI."""
    from botocore.exceptions import EndpointConnectionError

    from generator.core.uris import parse_uri, triton_uri
    from generator.push.digest import empty_directories, file_hashes, repository_digest
    from generator.push.run import push

    def lose_the_manifest(params: dict, **_: object) -> None:
        if params["Key"].endswith(MANIFEST):
            raise EndpointConnectionError(endpoint_url=s3_endpoint)

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.meta.events.register("before-parameter-build.s3.PutObject", lose_the_manifest)
    with pytest.raises(StorageError, match="could not reach"):
        push(example_repo, f"s3://{BUCKET}/{prefix}", endpoint_url=s3_endpoint, client=client)
    digest = repository_digest(file_hashes(example_repo), empty_directories(example_repo))
    keys = _keys(s3_endpoint, f"{prefix}/{digest}/")
    assert keys and f"{prefix}/{digest}/{MANIFEST}" not in keys  # every object but the manifest
    return triton_uri(parse_uri(f"s3://{BUCKET}/{prefix}"), f"{prefix}/{digest}", s3_endpoint)


def test_serve_refuses_an_interrupted_push_until_it_is_pushed_again(
    example_repo: Path, s3_endpoint: str, tmp_path: Path
) -> None:
    from generator.push.run import push

    uri = _interrupted_push(example_repo, s3_endpoint, "interrupted")
    with pytest.raises(StorageError, match=re.escape(f"the push to {uri} did not complete")) as caught:
        EmbeddedServer(uri, **free_ports()).start()
    (problem,) = caught.value.problems
    assert uri in problem and "push again" in problem
    ports = [str(find_free_port()) for _ in range(3)]
    flags = ["--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]
    refused = run_cli("serve", uri, *flags, cwd=tmp_path, timeout=120)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and len(lines) == 1 and "did not complete" in lines[0], refused.stderr
    assert push(example_repo, f"s3://{BUCKET}/interrupted", endpoint_url=s3_endpoint).uri == uri
    from generator.push.check import check_pushed

    check_pushed(uri)  # the manifest is there now: serve goes on


def test_a_repository_uploaded_by_hand_is_served_once_it_has_the_marker(
    example_repo: Path, s3_endpoint: str
) -> None:
    from generator.push.check import check_pushed
    from generator.push.store import MARKER

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for path in sorted(example_repo.rglob("*")):
        relative = path.relative_to(example_repo).as_posix()
        if path.is_file() and relative != MANIFEST and "__pycache__" not in relative:
            client.upload_file(str(path), BUCKET, f"by-hand/{relative}")
    for path in sorted(example_repo.rglob("*")):  # the ensembles' empty version directories
        if path.is_dir() and not any(path.iterdir()):
            client.put_object(
                Bucket=BUCKET, Key=f"by-hand/{path.relative_to(example_repo).as_posix()}/", Body=b""
            )
    uri = f"s3://{s3_endpoint}/{BUCKET}/by-hand"
    with pytest.raises(StorageError, match=re.escape(f"put an empty object '{MARKER}' at {uri}/ once")):
        check_pushed(uri)
    client.put_object(Bucket=BUCKET, Key=f"by-hand/{MARKER}", Body=b"")
    check_pushed(uri)
    with (
        EmbeddedServer(uri, **free_ports()) as server,
        httpclient.InferenceServerClient(server.endpoints.http) as client,
    ):
        assert client.is_model_ready("text_pipeline") and client.is_model_ready("digits_cnn")


def test_checking_a_push_without_credentials_or_a_store_fails_in_one_line(
    pushed, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from generator.push.check import check_pushed

    with pytest.raises(StorageError, match="the bucket 'absent' does not exist"):
        check_pushed(f"s3://{s3_endpoint}/absent/fleet/{pushed.digest}")
    closed = f"http://127.0.0.1:{find_free_port()}"
    with pytest.raises(StorageError, match=f"could not reach {closed}") as caught:
        check_pushed(f"s3://{closed}/{BUCKET}/fleet/{pushed.digest}")
    assert len(caught.value.problems) == 1
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="no AWS credentials were found; set AWS_ACCESS_KEY_ID"):
        check_pushed(pushed.uri)


def test_cli_push_with_a_malformed_endpoint_fails_in_one_line(example_repo: Path, tmp_path: Path) -> None:
    result = run_cli(
        "push", str(example_repo), f"s3://{BUCKET}/x", "--endpoint-url", "http://[::1", cwd=tmp_path
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert (
        lines[0]
        == "error: --endpoint-url 'http://[::1' is not an http(s)://HOST[:PORT] address (Invalid IPv6 URL)"
    )


def test_serving_from_an_unreachable_endpoint_fails_at_once() -> None:
    port = find_free_port()
    began = time.monotonic()
    with pytest.raises(ServerError, match=f"cannot reach the S3 endpoint 127.0.0.1:{port}") as caught:
        EmbeddedServer(f"s3://http://127.0.0.1:{port}/{BUCKET}/x", **free_ports()).start()
    assert len(caught.value.problems) == 1 and time.monotonic() - began < 10


def test_cli_push_then_serve(example_repo: Path, s3_endpoint: str, tmp_path: Path) -> None:
    result = run_cli(
        "push", str(example_repo), f"s3://{BUCKET}/cli", "--endpoint-url", s3_endpoint, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    uri = result.stdout.strip().splitlines()[-1]
    assert uri.startswith(f"s3://{s3_endpoint}/{BUCKET}/cli/")
    again = run_cli(
        "push", str(example_repo), f"s3://{BUCKET}/cli", "--endpoint-url", s3_endpoint, cwd=tmp_path
    )
    assert again.returncode == 0 and "0 object(s) uploaded" in again.stdout, again.stdout

    bad = run_cli("push", str(example_repo), "s3://absent/x", "--endpoint-url", s3_endpoint, cwd=tmp_path)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), bad.stderr

    ports = [str(find_free_port()) for _ in range(3)]
    flags = ["--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]
    process = subprocess.Popen(
        [sys.executable, "-m", "generator", "serve", uri, *flags],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        deadline, lines = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any(uri in line for line in lines), (lines, process.stderr.read())
        with httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}") as client:
            assert client.is_model_ready("text_pipeline") and client.is_model_ready("digits_cnn")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_endpoint_from_the_aws_variable_is_named_in_the_uri(
    example_repo: Path, pushed, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from generator.push.run import push

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    again = push(example_repo, f"s3://{BUCKET}/fleet")
    assert again.uri == pushed.uri and again.uploaded == []
