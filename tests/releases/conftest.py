from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def people(
    release_manager: Any, operator: Any, auditor: Any, reviewer: Any, outsider: Any
) -> dict[str, Any]:
    """Each persona a page test walks through, by name; ``anonymous`` is nobody."""
    return {
        "release_manager": release_manager,
        "operator": operator,
        "auditor": auditor,
        "reviewer": reviewer,
        "outsider": outsider,
        "anonymous": None,
    }
