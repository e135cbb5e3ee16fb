"""The plugin kit's conformance suite, run on both Azure APIs, v1 and dated (see conftest.py)."""

from gateway.testing.conformance import TestConformance

__all__ = ["TestConformance"]
