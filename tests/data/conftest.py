"""Point the digit-classifier cache at a per-session temporary directory.

The classifier trains once per session (≈1 s) into that directory; tests never read or write
the user's ~/.cache/fedgan.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fedgan.simulator.data import digit_classifier


@pytest.fixture(scope="session", autouse=True)
def classifier_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("fedgan_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDGAN_CACHE", str(path))
        digit_classifier.clear_memo()
        yield path
    digit_classifier.clear_memo()
