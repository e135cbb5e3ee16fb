"""Credentials masked in the debug lines of libraries the gateway's providers use.

The gateway's own log lines name only what it chose (request ids, paths, statuses).
Some libraries log whole requests at DEBUG: botocore (Bedrock, managed mode's S3 store)
writes every request's headers and its canonical request for signing, where the AWS
session token sits in clear, and response bodies, where credentials can come back. An
operator who turns logging up to DEBUG to chase a problem must not find a caller's
session token in the file, so a filter on those loggers masks credential values in
each line before any handler sees it. Installed by ``gateway.app.make_app``.
"""

from __future__ import annotations

import logging
import re

# Loggers that write request headers or response bodies at DEBUG.
LOGGERS = ("botocore.endpoint", "botocore.auth", "botocore.parsers")

_MASK = "***"
_CREDENTIAL_NAMES = (
    r"x-amz-security-token|authorization|proxy-authorization|api-key|x-api-key"
    r"|x-portkey-api-key|x-portkey-aws-secret-access-key|x-portkey-aws-session-token"
    r"|x-portkey-azure-ad-token|x-portkey-vertex-service-account-json"
)
# A header as a canonical request writes it ("name:value"), or as a repr of a headers
# dict does ("'Name': b'value'"): the value runs to the quote, line end or comma.
_HEADER = re.compile(
    rf"(?P<name>\b(?:{_CREDENTIAL_NAMES}))(?P<sep>['\"]?\s*[:=]\s*b?['\"]?)(?P<value>[^'\"\n,}}]+)",
    re.IGNORECASE,
)
# Credentials in a response body, XML (STS, S3) or JSON (OAuth, IMDS).
_FIELD_NAMES = (
    r"SecretAccessKey|SessionToken|Token|access_token|refresh_token|id_token"
    r"|private_key|client_secret|password"
)
_XML = re.compile(rf"(?P<open><(?P<tag>{_FIELD_NAMES})>)(?P<value>[^<]+)(?=</(?P=tag)>)")
_JSON = re.compile(rf"(?P<name>\"(?:{_FIELD_NAMES})\"\s*:\s*\")(?P<value>(?:[^\"\\]|\\.)+)")


def mask_credentials(text: str) -> str:
    text = _HEADER.sub(lambda m: f"{m['name']}{m['sep']}{_MASK}", text)
    text = _XML.sub(lambda m: f"{m['open']}{_MASK}", text)
    return _JSON.sub(lambda m: f"{m['name']}{_MASK}", text)


class MaskCredentials(logging.Filter):
    """Rewrites a record's message with credential values masked (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def install() -> None:
    """Put the filter on every logger in ``LOGGERS`` (once, however often called)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskCredentials) for f in logger.filters):
            logger.addFilter(MaskCredentials())
