"""The DICOMweb server (QIDO-RS, WADO-RS, STOW-RS, rendered, metrics) as a Starlette app.

``create_app`` is imported lazily so that importing one module of the package (e.g.
``dcmstream.web.multipart``) does not pull in the whole web stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the ASGI app; see :func:`dcmstream.web.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
