"""push to Google Cloud Storage and Azure Blob Storage, and serve from GCS.

GCS: the example repository is pushed to gcp-storage-emulator on 127.0.0.1 with google-cloud-storage and
served from there by the real embedded Triton, whose GCS client reads the emulator from
``CLOUD_STORAGE_EMULATOR_ENDPOINT``; its outputs over HTTP and gRPC equal the local repository's.
Azure: the example is pushed to Azurite, Microsoft's emulator, with azure-storage-blob, and read back byte
for byte. On both, a push that did not complete (its manifest missing) is refused before Triton reads it. Triton reads ``as://`` only from ``https://ACCOUNT.blob.core.windows.net``, so no test can serve
from Azurite."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from generator.core.errors import ServerError, StorageError
from generator.core.repository import MANIFEST
from generator.push.digest import file_hashes
from generator.push.run import push
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer

from ..azurite import ACCOUNT, ACCOUNT_KEY, azurite_blob, connection_string, running_azurite
from ..conftest import free_ports, run_cli
from ..example_outputs import assert_same_answers

pytestmark = pytest.mark.integration

BUCKET = "models"
_AZURE_VARIABLES = (
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
)


def _local_keys(repo: Path, prefix: str) -> list[str]:
    """The keys a push of ``repo`` must write: every file, and the ensembles' empty version directories."""
    empty = [p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_dir() and not any(p.iterdir())]
    return sorted(
        [*(f"{prefix}/{relative}" for relative in file_hashes(repo)), *(f"{prefix}/{e}/" for e in empty)]
    )


# ---------------------------------------------------------------------------------------------- GCS


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    """gcp-storage-emulator on a free loopback port, in memory, with one bucket."""
    emulator = pytest.importorskip(
        "gcp_storage_emulator.server",
        reason="the GCS server for these tests: pip install gcp-storage-emulator",
    )
    pytest.importorskip("google.cloud.storage", reason="push to gs:// needs pip install 'tritongen[gcs]'")
    with pytest.MonkeyPatch.context() as env:
        for name in (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "STORAGE_EMULATOR_HOST",
            "CLOUD_STORAGE_EMULATOR_ENDPOINT",
        ):
            env.delenv(name, raising=False)
        port = find_free_port()
        server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def gcs_pushed(example_repo: Path, gcs_endpoint: str) -> object:
    return push(example_repo, f"gs://{BUCKET}/fleet", endpoint_url=gcs_endpoint)


def _gcs_blobs(endpoint: str, prefix: str) -> dict[str, object]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )
    return {blob.name: blob for blob in client.list_blobs(BUCKET, prefix=prefix)}


def test_push_to_gcs_lays_the_repository_out_under_its_digest(
    example_repo: Path, gcs_pushed, gcs_endpoint: str
) -> None:
    prefix = f"fleet/{gcs_pushed.digest}"
    assert gcs_pushed.uri == f"gs://{BUCKET}/{prefix}"
    assert gcs_pushed.environment == {"CLOUD_STORAGE_EMULATOR_ENDPOINT": gcs_endpoint}
    blobs = _gcs_blobs(gcs_endpoint, f"{prefix}/")
    assert sorted(blobs) == _local_keys(example_repo, prefix) == sorted(gcs_pushed.uploaded)
    assert gcs_pushed.uploaded[-1] == f"{prefix}/{MANIFEST}"  # the manifest comes last
    config = f"{prefix}/digits_cnn/config.pbtxt"
    assert blobs[config].download_as_bytes() == (example_repo / "digits_cnn" / "config.pbtxt").read_bytes()
    assert blobs[config].metadata == {"sha256": file_hashes(example_repo)["digits_cnn/config.pbtxt"]}


def test_a_second_push_to_gcs_uploads_nothing(example_repo: Path, gcs_pushed, gcs_endpoint: str) -> None:
    again = push(example_repo, f"gs://{BUCKET}/fleet", endpoint_url=gcs_endpoint)
    assert again.uri == gcs_pushed.uri and again.uploaded == []
    assert sorted(again.skipped) == sorted(gcs_pushed.uploaded)


def test_served_from_gcs_equals_the_local_repository(
    example_server, gcs_pushed, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in gcs_pushed.environment.items():
        monkeypatch.setenv(name, value)
    with EmbeddedServer(gcs_pushed.uri, **free_ports()) as remote:
        assert_same_answers(example_server, remote)


def test_gcs_mistakes_fail_in_one_line(
    example_repo: Path, gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StorageError, match="the bucket 'absent' does not exist") as caught:
        push(example_repo, "gs://absent/fleet", endpoint_url=gcs_endpoint)
    assert len(caught.value.problems) == 1
    closed = f"http://127.0.0.1:{find_free_port()}"
    with pytest.raises(StorageError, match=f"could not reach {closed} for gs://{BUCKET}"):
        push(example_repo, f"gs://{BUCKET}/fleet", endpoint_url=closed)
    # Triton's GCS client would retry a dead emulator; serve says so at once.
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", closed)
    began = time.monotonic()
    with pytest.raises(ServerError, match="cannot reach the GCS emulator"):
        EmbeddedServer(f"gs://{BUCKET}/fleet", **free_ports()).start()
    assert time.monotonic() - began < 10


def test_serving_an_interrupted_push_from_gcs_is_refused(
    example_repo: Path, gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from generator.push.check import check_pushed

    pushed = push(example_repo, f"gs://{BUCKET}/cut", endpoint_url=gcs_endpoint)
    # What a push killed before its last object leaves: every object but the manifest.
    _gcs_blobs(gcs_endpoint, f"cut/{pushed.digest}/{MANIFEST}")[f"cut/{pushed.digest}/{MANIFEST}"].delete()
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", gcs_endpoint)  # where Triton and the check read
    with pytest.raises(StorageError, match=re.escape(f"the push to {pushed.uri} did not complete")) as caught:
        EmbeddedServer(pushed.uri, **free_ports()).start()
    assert len(caught.value.problems) == 1 and "push again" in caught.value.problems[0]
    with pytest.raises(StorageError, match=re.escape(f"nothing is stored under gs://{BUCKET}/nothing")):
        check_pushed(f"gs://{BUCKET}/nothing")
    with pytest.raises(
        StorageError, match=re.escape(f"the bucket 'absent' does not exist at {gcs_endpoint}; check the URI")
    ):
        check_pushed(f"gs://absent/cut/{pushed.digest}")
    assert push(example_repo, f"gs://{BUCKET}/cut", endpoint_url=gcs_endpoint).uploaded == [
        f"cut/{pushed.digest}/{MANIFEST}"
    ]
    check_pushed(pushed.uri)


def test_checking_a_gcs_push_without_credentials_fails_in_one_line(
    gcs_pushed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from generator.push.check import check_pushed

    for name in ("CLOUD_STORAGE_EMULATOR_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no user's gcloud login
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{find_free_port()}")  # not on Google's cloud
    with pytest.raises(StorageError, match="no Google credentials were found") as caught:
        check_pushed(gcs_pushed.uri)
    assert len(caught.value.problems) == 1


def test_cli_push_to_gcs_names_the_variable_triton_needs(
    example_repo: Path, gcs_pushed, gcs_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "STORAGE_EMULATOR_HOST", gcs_endpoint.removeprefix("http://")
    )  # as gcloud's tools take it
    result = run_cli("push", str(example_repo), f"gs://{BUCKET}/fleet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"CLOUD_STORAGE_EMULATOR_ENDPOINT={gcs_endpoint}" in result.stdout
    assert "0 object(s) uploaded" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == gcs_pushed.uri


# -------------------------------------------------------------------------------------------- Azure


@pytest.fixture(scope="module")
def azure_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service on a free loopback port with one container, and the key variables Triton reads."""
    pytest.importorskip("azure.storage.blob", reason="push to as:// needs pip install 'tritongen[azure]'")
    executable, why = azurite_blob()
    if executable is None:
        pytest.skip(why)
    from azure.storage.blob import BlobServiceClient

    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with pytest.MonkeyPatch.context() as env, running_azurite(executable, find_free_port(), log) as url:
        for name in _AZURE_VARIABLES:
            env.delenv(name, raising=False)
        env.setenv("AZURE_STORAGE_ACCOUNT", ACCOUNT)
        env.setenv("AZURE_STORAGE_KEY", ACCOUNT_KEY)
        BlobServiceClient(
            url, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
        ).create_container(BUCKET)
        yield url


@pytest.fixture(scope="module")
def azure_pushed(example_repo: Path, azure_url: str) -> object:
    return push(example_repo, f"as://{ACCOUNT}/{BUCKET}/fleet", endpoint_url=azure_url)


def _container(url: str) -> object:
    from azure.storage.blob import ContainerClient

    return ContainerClient(url, BUCKET, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY})


def test_push_to_azure_writes_every_file_byte_for_byte(
    example_repo: Path, azure_pushed, azure_url: str
) -> None:
    prefix = f"fleet/{azure_pushed.digest}"
    assert azure_pushed.uri == f"as://{ACCOUNT}/{BUCKET}/{prefix}"
    assert "blob.core.windows.net" in azure_pushed.notes[0]  # where Triton reads as:// from
    container = _container(azure_url)
    blobs = {
        blob.name: blob for blob in container.list_blobs(name_starts_with=f"{prefix}/", include=["metadata"])
    }
    assert sorted(blobs) == _local_keys(example_repo, prefix) == sorted(azure_pushed.uploaded)
    assert azure_pushed.uploaded[-1] == f"{prefix}/{MANIFEST}"
    hashes = file_hashes(example_repo)
    for relative, sha in hashes.items():
        key = f"{prefix}/{relative}"
        assert container.download_blob(key).readall() == (example_repo / relative).read_bytes(), key
        assert blobs[key].metadata == {"sha256": sha}


def test_a_second_push_to_azure_uploads_nothing(example_repo: Path, azure_pushed, azure_url: str) -> None:
    again = push(example_repo, f"as://{ACCOUNT}/{BUCKET}/fleet", endpoint_url=azure_url)
    assert again.uri == azure_pushed.uri and again.uploaded == []
    assert sorted(again.skipped) == sorted(azure_pushed.uploaded)


def test_azure_connection_string_is_enough(
    example_repo: Path, azure_pushed, azure_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(azure_url))
    again = push(example_repo, f"as://{ACCOUNT}/{BUCKET}/fleet")
    assert again.uri == azure_pushed.uri and again.uploaded == []


def test_azure_mistakes_fail_in_one_line(
    example_repo: Path, azure_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StorageError, match="the container 'absent' does not exist") as caught:
        push(example_repo, f"as://{ACCOUNT}/absent/fleet", endpoint_url=azure_url)
    assert len(caught.value.problems) == 1
    monkeypatch.setenv("AZURE_STORAGE_KEY", "A" * 8 + ACCOUNT_KEY[8:])
    with pytest.raises(StorageError, match="was refused; check AZURE_STORAGE_KEY"):
        push(example_repo, f"as://{ACCOUNT}/{BUCKET}/fleet", endpoint_url=azure_url)
    for name in _AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    result = run_cli(
        "push", str(example_repo), f"as://{ACCOUNT}/{BUCKET}/x", "--endpoint-url", azure_url, cwd=tmp_path
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and lines == [lines[0]] and "no Azure credentials" in lines[0], (
        result.stderr
    )


def test_checking_an_interrupted_push_to_azure_refuses_it(
    example_repo: Path, azure_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from generator.push.check import check_pushed

    pushed = push(example_repo, f"as://{ACCOUNT}/{BUCKET}/cut", endpoint_url=azure_url)
    _container(azure_url).delete_blob(
        f"cut/{pushed.digest}/{MANIFEST}"
    )  # the push killed before its last object
    for name in _AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageError, match="no Azure credentials were found"):
        check_pushed(pushed.uri)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(azure_url))
    with pytest.raises(StorageError, match=re.escape(f"the push to {pushed.uri} did not complete")) as caught:
        check_pushed(pushed.uri)
    assert len(caught.value.problems) == 1 and "push again" in caught.value.problems[0]
    push(example_repo, f"as://{ACCOUNT}/{BUCKET}/cut")  # pushed again, through the connection string
    check_pushed(pushed.uri)
    closed = f"http://127.0.0.1:{find_free_port()}/{ACCOUNT}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(closed))
    with pytest.raises(StorageError, match=re.escape(f"could not reach {closed}")) as caught:
        check_pushed(pushed.uri)
    assert len(caught.value.problems) == 1


# ------------------------------------------------------------------------------ large files, both


def _large_repository(root: Path) -> Path:
    """A model whose file is larger than one upload request of google-cloud-storage (8 MiB: resumable)."""
    (root / "big" / "1").mkdir(parents=True)
    (root / "big" / "config.pbtxt").write_text('name: "big"\nbackend: "python"\n')
    (root / "big" / "1" / "model.bin").write_bytes(np.random.default_rng(0).bytes(9 * 1024 * 1024 + 7))
    return root


def test_a_file_larger_than_one_request_arrives_whole(
    tmp_path: Path, gcs_endpoint: str, azure_url: str
) -> None:
    repo = _large_repository(tmp_path / "repo")
    expected = (repo / "big" / "1" / "model.bin").read_bytes()
    pushed = push(repo, f"gs://{BUCKET}/large", endpoint_url=gcs_endpoint)
    key = f"large/{pushed.digest}/big/1/model.bin"
    assert _gcs_blobs(gcs_endpoint, key)[key].download_as_bytes() == expected
    pushed = push(repo, f"as://{ACCOUNT}/{BUCKET}/large", endpoint_url=azure_url)
    assert _container(azure_url).download_blob(f"large/{pushed.digest}/big/1/model.bin").readall() == expected
