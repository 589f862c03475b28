"""yambda_dl: a research framework for the Yambda music recommendation dataset.

The notebook API is importable from here (`from yambda_dl import load_split, build_model, recommend, evaluate`);
it is loaded on first use, so `import yambda_dl` imports neither torch nor lightning.
"""

from __future__ import annotations

from typing import Any

_API = ("build_model", "evaluate", "load_split", "model_names", "recommend")
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    """Load yambda_dl.api on first access to one of its functions (PEP 562)."""
    if name in _API:
        from yambda_dl import api

        return getattr(api, name)
    raise AttributeError(f"module 'yambda_dl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
