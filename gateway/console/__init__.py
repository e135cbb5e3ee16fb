"""The terminal client: ``finetune-gateway jobs ...`` and ``files upload`` against a running
gateway (``commands``), its HTTP client (``client``) and what metrics say (``progress``)."""
