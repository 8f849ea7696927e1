"""Whether the ``learn`` extra (torch, gymnasium, stable-baselines3) is installed, checked
without importing it."""

from __future__ import annotations

import importlib.util
from typing import Final

from atomlab.core.errors import UnavailableError

LEARN_PACKAGES: Final = ("torch", "gymnasium", "stable_baselines3")


def require_learn_extra(packages: tuple[str, ...] = LEARN_PACKAGES) -> None:
    """Raise :class:`UnavailableError` (exit 4) naming the missing packages and the fix."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise UnavailableError(
            f"this needs {', '.join(missing)} (the learn extra); install it with: "
            "pip install 'atomlab[learn]'",
            extra="learn",
            missing=missing,
        )
