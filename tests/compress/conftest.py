"""Fixtures of the compression tests: small synthetic files of each kind, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dcmstream
from dcmstream.samples import write_multiframe

ROWS, COLUMNS, FRAMES = 64, 48, 4  # non-square on purpose

# name -> write_multiframe arguments
KINDS = {
    "ct": dict(kind="ct"),
    "ct-signed": dict(kind="ct", signed=True),
    "mr": dict(kind="mr"),
    "us": dict(kind="us"),
}


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Native (explicit VR) synthetic files: ct, ct-signed, mr, us."""
    folder = tmp_path_factory.mktemp("synthetic")
    return {name: write_multiframe(folder / f"{name}.dcm", frames=FRAMES, rows=ROWS,
                                   columns=COLUMNS, syntax="explicit", **kwargs)
            for name, kwargs in KINDS.items()}


def frames_of(path: str | Path) -> np.ndarray:
    """All frames through dcmstream (pydicom-identical), stacked."""
    with dcmstream.open(path, cache=False) as inst:
        return np.stack([inst.frame(i) for i in range(len(inst))])
