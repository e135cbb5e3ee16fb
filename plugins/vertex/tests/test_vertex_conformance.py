"""The plugin kit's conformance suite, run on Vertex AI and GCS stand-ins (see conftest.py)."""

from gateway.testing.conformance import TestConformance

__all__ = ["TestConformance"]
