"""The branchnet CLI and the orchestration that composes nodes (simulate, node runners)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
