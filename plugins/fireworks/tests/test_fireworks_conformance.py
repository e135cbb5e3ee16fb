"""The plugin kit's conformance suite, run on the Fireworks AI plugin (see conftest.py)."""

from gateway.testing.conformance import TestConformance

__all__ = ["TestConformance"]
