"""The plugin kit's conformance suite, run on Bedrock and S3 on moto (see conftest.py)."""

from gateway.testing.conformance import TestConformance

__all__ = ["TestConformance"]
