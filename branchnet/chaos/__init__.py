"""Fault injection: scenarios that break things under load, and the checker of every request.

The scenarios live in :mod:`branchnet.chaos.scenarios`; the CLI in :mod:`branchnet.chaos.cli`.
"""

from __future__ import annotations

from branchnet.chaos.checker import CLASSES, Verdict, classify

__all__ = ["CLASSES", "Verdict", "classify"]
