"""The OpenAI provider for finetune-gateway (entry point ``openai``)."""

from gateway_openai.provider import OpenAIProvider, OpenAISettings

__all__ = ["OpenAIProvider", "OpenAISettings"]
