"""The Together AI provider for finetune-gateway (entry point ``together-ai``; ``together``)."""

from gateway_together.provider import TogetherProvider, TogetherSettings

__all__ = ["TogetherProvider", "TogetherSettings"]
