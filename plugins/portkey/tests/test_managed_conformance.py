"""The plugin kit's conformance suite, run on managed mode (see conftest.py)."""

from gateway.testing.conformance import TestConformance

__all__ = ["TestConformance"]
