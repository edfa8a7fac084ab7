"""push: upload a built model repository to object storage (S3 and S3-compatible stores, GCS, Azure Blob),
and check that a push completed before a repository is served from there.

Modules:
    run:      ``push()``: the uploads under the repository's content digest, the manifest (or marker) last
    digest:   every file's SHA-256 (the build manifest's where it records one) and the repository digest
    check:    ``check_pushed()``: serve's check that a push completed before Triton reads the URI
    store:    the store interface every store implements, and what they share (metadata key, marker)
    s3:       Amazon S3 and S3-compatible stores through boto3
    gcs:      Google Cloud Storage and its emulators through google-cloud-storage
    azure:    Azure Blob Storage and Azurite through azure-storage-blob
    registry: the store and the library of each URI scheme

The URIs themselves (parsing, the prefix rules, Triton's and KServe's forms) live in
:mod:`generator.core.uris`.
"""
