"""The exceptions dcmstream raises.

One tree, so callers can catch as broadly or as narrowly as they need: every error the
project raises on purpose derives from :class:`DcmstreamError`, and keeps the builtin base
a caller would have caught before (``except KeyError`` still sees a missing blob)::

    DcmstreamError
    ├── DicomFormatError (also ValueError)        malformed or inconsistent input
    │   └── FrameIndexError                        offsets/items that do not add up
    ├── UnsupportedTransferSyntaxError (also NotImplementedError)
    │                                              no installed codec for the syntax
    ├── DecodeError (also ValueError)              a codec rejected one frame's bytes
    │   └── CharlsError             codecs/charls.py     CharLS returned an error code
    ├── CharlsMemoryError (also MemoryError) codecs/charls.py CharLS could not allocate a coder
    ├── OpenJpegVersionError (also OSError) codecs/j2k_levels.py libopenjp2 older than 2.3
    ├── SourceError (also OSError)                 the byte source failed (I/O, closed)
    │   └── RangeNotSupportedError            io/remote.py         a server answered a Range request with the whole object
    ├── InvalidArgumentError (also ValueError)     a public API called with a bad argument
    ├── InvalidArgumentTypeError (also TypeError)  an argument of a type the API cannot use
    ├── PathNotFoundError (also FileNotFoundError) an input file, folder or remote object that does not exist
    ├── PathExistsError (also FileExistsError)     an output that must be new already exists
    ├── MissingDependencyError (also ImportError)  an optional dependency is not installed
    ├── FrameNumberError (also IndexError)         a frame number outside the instance's frames
    ├── InvalidValueError (also ValueError)   units.py             bad size or window text
    ├── CacheBudgetError (also ValueError)    cache/tier.py        item larger than budget
    ├── PoolFullError (also RuntimeError)     cache/pool.py        decode queue is full
    ├── CacheClosedError (also RuntimeError)  cache/pool.py        pool or prefetcher used after close
    ├── FileClosedError (also ValueError)     io/atomic.py         atomic file written after close
    ├── BlobNotFoundError (also KeyError)     archive/blobstore.py no blob under a key
    │   ├── MissingBlobError                  archive/archive.py   a catalogued instance's bytes are gone (410)
    │   ├── InstanceChangedError              archive/archive.py   bytes swapped while read (503: retry)
    │   └── InstanceDeletedError              archive/archive.py   the instance was deleted meanwhile (404)
    ├── BlobStoreError (also OSError)         archive/blobstore.py the store failed (network)
    │   └── BlobStoreConnectionError (also ConnectionError) archive/s3store.py no answer, 5xx: retried
    ├── BlobExistsError (also FileExistsError) archive/blobstore.py exclusive put: key taken
    ├── StorageFullError (also OSError)       archive/blobstore.py storage exhausted: disk, quota, object store, catalog (507)
    ├── InvalidKeyError (also ValueError)     archive/blobstore.py a key that could escape
    ├── InvalidUIDError (also ValueError)     archive/uids.py      not a DICOM UID (400)
    ├── CatalogConflictError (also ValueError) archive/catalog.py  contradicts the catalog
    ├── QueryError (also ValueError)          archive/catalog.py   malformed query (400)
    ├── CatalogUnavailableError (also RuntimeError) archive/catalog.py database kept refusing a write
    ├── CatalogFeatureError (also NotImplementedError) archive/catalog.py backend lacks an optional feature
    ├── CatalogMigrationError (also RuntimeError) archive/migrations a broken schema history
    ├── _AlreadyStored                        archive/catalog.py   internal: a concurrent duplicate add
    ├── _Rollback                             archive/catalog.py   internal: a failed compare and swap
    ├── UnknownTierError (also KeyError)      archive/archive.py   a row names an unconfigured tier
    ├── LifecycleError (also RuntimeError)    archive/lifecycle.py bad rule, or a move failed verification
    ├── ConfigError (also ValueError)         config.py            bad or unknown configuration key
    ├── PolicyError (also ValueError)         policy.py            bad compression policy, or a bad transcode result
    ├── UnsupportedTarget (also ValueError)   compress/encoders.py target cannot hold image
    ├── PixelDataTooLarge (also ValueError)   compress/writer.py   outgrew 32-bit offsets
    ├── WriterError (also RuntimeError)       compress/writer.py   frames written differ from the count declared
    ├── QaFailure                             compress/results.py  lossy frame missed QA
    ├── MultipartError (also ValueError)      web/multipart.py     malformed multipart body
    ├── _TooLarge                             web/stow.py          internal: STOW body > limit
    ├── IssuerError (also RuntimeError)       web/auth.py          OIDC discovery or JWKS unreadable (503)
    ├── _Unauthorized                         web/auth.py          internal: a credential refused (401)
    ├── IntegerRangeError (also OverflowError) pipeline/dtypes.py  no integer dtype holds a range
    ├── ServeSecurityError (also RuntimeError) cli/serve.py        no [auth] / no calling AE titles on a non-loopback address
    ├── DimseError (also ConnectionError)     dimse/common.py      a DICOM peer refused or dropped an association
    └── ServeEnvironmentError (also RuntimeError) cli/serve.py     worker factory started outside 'serve'

The classes after PathExistsError live next to the code that raises them (they are part of
that package's API); this drawing is the one place that lists them all, and
``tests/test_errors.py`` fails when a new exception class is missing from it or from the
tree.

Every message names where the problem is: the file (or source), the element tag
or frame number, and the cause.
"""

from __future__ import annotations

__all__ = [
    "DcmstreamError",
    "DicomFormatError",
    "FrameIndexError",
    "UnsupportedTransferSyntaxError",
    "DecodeError",
    "SourceError",
    "InvalidArgumentError",
    "MissingDependencyError",
    "FrameNumberError",
    "InvalidArgumentTypeError",
    "PathNotFoundError",
    "PathExistsError",
]


class DcmstreamError(Exception):
    """Base class of every error raised on purpose by dcmstream."""


class DicomFormatError(DcmstreamError, ValueError):
    """The input is not valid DICOM, or its attributes contradict its data."""


class FrameIndexError(DicomFormatError):
    """Frame offsets, offset tables or item headers are inconsistent."""


class UnsupportedTransferSyntaxError(DcmstreamError, NotImplementedError):
    """No installed codec can decode (or encode) this transfer syntax."""

    def __init__(self, uid: str, name: str = "", hint: str = "") -> None:
        self.uid = uid
        self.name = name
        self.hint = hint
        label = f"{name} ({uid})" if name else uid
        message = f"transfer syntax {label} is not supported"
        if hint:
            message += f": {hint}"
        super().__init__(message)


class DecodeError(DcmstreamError, ValueError):
    """A codec failed on the bytes of one frame."""


class SourceError(DcmstreamError, OSError):
    """Reading from the byte source failed."""


class InvalidArgumentError(DcmstreamError, ValueError):
    """A public function or class was given an argument it cannot work with (a caller's
    mistake, not bad input data); the message names the argument."""


class MissingDependencyError(DcmstreamError, ImportError):
    """An optional dependency a feature needs is not installed; the message says which
    package (``pip install 'dcmstream[extra]'``)."""


class FrameNumberError(DcmstreamError, IndexError):
    """A frame number outside the frames of an instance; the message gives the valid range."""


class InvalidArgumentTypeError(DcmstreamError, TypeError):
    """A public function or class was given an argument of a type it cannot use; the
    message names the argument and the type it got."""


class PathNotFoundError(SourceError, FileNotFoundError):
    """An input file or folder named by the caller does not exist."""


class PathExistsError(DcmstreamError, FileExistsError):
    """An output that must be created fresh already exists."""
