"""Shared fixtures of the photometry tests: where the read-only shared data lives."""

from pathlib import Path

import pytest

#: ``../shared`` relative to the project root.
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder; tests that need it are skipped when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED
