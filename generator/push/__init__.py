"""push: upload a built model repository to object storage (S3 and S3-compatible stores, GCS, Azure Blob),
and check that a push completed before a repository is served from there.
"""
