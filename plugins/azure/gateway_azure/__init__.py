"""The Azure OpenAI provider for finetune-gateway (entry point ``azure-openai``; ``azure``)."""

from gateway_azure.provider import AzureOpenAIProvider
from gateway_azure.settings import AzureSettings

__all__ = ["AzureOpenAIProvider", "AzureSettings"]
