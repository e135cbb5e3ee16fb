"""The plugin kit: what a provider plugin's tests use to check it keeps OpenAI's contract.

Imported by pytest only (through the ``pytest11`` entry point, ``gateway.testing.plugin``),
never by the gateway itself, so the gateway does not need pytest or the OpenAI SDK. See
docs/plugins.md.
"""
