"""Managed mode for finetune-gateway (``x-portkey-provider: portkey``)."""

from gateway_portkey.provider import ManagedProvider

__all__ = ["ManagedProvider"]
