"""The Fireworks AI provider for finetune-gateway (entry point ``fireworks-ai``; ``fireworks``)."""

from gateway_fireworks.provider import FireworksProvider
from gateway_fireworks.settings import FireworksSettings

__all__ = ["FireworksProvider", "FireworksSettings"]
