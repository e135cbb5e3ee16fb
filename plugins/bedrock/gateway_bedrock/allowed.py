"""Which IAM roles and s3:// locations a request may name with the config's credentials.

Bedrock assumes the role to read the training data and write the output, and the
gateway's own S3 client reads a user's s3:// training file: each would otherwise act
for the caller on anything the config's identity can reach. Checked before any AWS call.
"""

from __future__ import annotations

from gateway.errors import BadRequest
from gateway.resources import (
    not_allowed,
    own_prefix,
    require_bucket_allowed,
    require_uri_allowed,
)
from gateway_bedrock.aws import BedrockSettings

BUCKET_OPTION = "x-portkey-aws-s3-bucket"


def allowed_s3_uris(settings: BedrockSettings) -> tuple[str, ...]:
    """The listed prefixes, plus the virtual key's own staging bucket and prefix."""
    own = own_prefix("s3", settings.aws_s3_bucket, settings.aws_s3_prefix)
    return settings.allowed_s3_uris + own


def check_role(settings: BedrockSettings, role_arn: str, *, param: str) -> None:
    if role_arn != settings.aws_role_arn and role_arn not in settings.allowed_role_arns:
        message = f"The role '{role_arn}' is not among those this virtual key allows"
        raise not_allowed(message, param)


def check_uri(settings: BedrockSettings, uri: str, *, param: str) -> None:
    require_uri_allowed(uri, allowed_s3_uris(settings), "s3", param=param)


def uri_allowed(settings: BedrockSettings, uri: str) -> bool:
    try:
        check_uri(settings, uri, param="output_file")
    except BadRequest:
        return False
    return True


def check_bucket_override(
    original: BedrockSettings, overridden: BedrockSettings, *, param: str
) -> None:
    """A request's staging bucket must be the virtual key's own or a listed one."""
    require_bucket_allowed(
        overridden.aws_s3_bucket,
        original.aws_s3_bucket,
        original.allowed_s3_uris,
        "s3",
        param=f"{param.rpartition('.')[0] or param}.{BUCKET_OPTION}",
    )
