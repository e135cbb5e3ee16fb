"""finetune-gateway: OpenAI's fine-tuning and files API in front of every provider.

Plugin authors need ``gateway.provider`` (the contract), ``gateway.models`` (the OpenAI
objects), ``gateway.errors`` and ``gateway.upstream`` (HTTP calls and error mapping).
"""

__version__ = "0.1.0"
