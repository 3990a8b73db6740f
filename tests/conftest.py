import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real NER data (`UNINER_DATA`, else `../shared/data`). Absent data fails, never skips."""
    root = Path(os.environ.get("UNINER_DATA", REPO.parent / "shared" / "data"))
    if not (root / "README.md").is_file():
        pytest.fail(f"real NER data not found at {root}: set UNINER_DATA to the shared data folder")
    return root
