"""The archive: catalog (SQLite by default) + blob store (filesystem by default) + ingest.

:mod:`.archive` holds the :class:`Archive` class, :mod:`.ingest` the ingest step,
:mod:`.stored` frame access through the stored index. The compression policy that
rewrites archived blobs needs :mod:`dcmstream.compress` too, so it lives above both
packages, in :mod:`dcmstream.policy`.
"""

from .archive import Archive, InstanceDeletedError
from .blobstore import (
    BlobExistsError,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    FilesystemBlobStore,
    InvalidKeyError,
    StorageFullError,
    validate_key,
)
from .catalog import (
    Catalog,
    CatalogConflictError,
    CatalogUnavailableError,
    InstanceRecord,
    Query,
    QueryError,
    SearchResult,
    SQLCatalog,
    SQLiteCatalog,
    query_integer,
)
from .deletion import DeleteResult
from .ingest import IngestResult, iter_files
from .s3store import S3BlobStore
from .stored import StoredInstance
from .uids import InvalidUIDError, is_valid_uid, validate_uid

__all__ = [
    "Archive",
    "InstanceDeletedError",
    "DeleteResult",
    "StorageFullError",
    "IngestResult",
    "iter_files",
    "BlobStore",
    "FilesystemBlobStore",
    "S3BlobStore",
    "BlobNotFoundError",
    "BlobExistsError",
    "BlobStoreError",
    "InvalidKeyError",
    "validate_key",
    "Catalog",
    "SQLCatalog",
    "SQLiteCatalog",
    "InstanceRecord",
    "Query",
    "QueryError",
    "query_integer",
    "SearchResult",
    "CatalogConflictError",
    "CatalogUnavailableError",
    "StoredInstance",
    "InvalidUIDError",
    "is_valid_uid",
    "validate_uid",
]
