"""What a virtual key, an inline config or the ``x-portkey-vertex-*`` headers give the provider.

Setting names are Portkey's (``vertex_project_id``, ...), so a Portkey config carries
over. A virtual key is trusted (it comes from the gateway's config file): its service
account may be a path to the key file or the key file's JSON, and it may name other
endpoints. Settings from a request are not: they must carry the key file's JSON (a path
would let a caller read files on the gateway's host, and no key at all would lend them
the gateway's own ambient credentials), the key must be a plain service account whose
token endpoint is Google's (the gateway posts a signed assertion there: anything else
would make it a way to reach internal addresses), and endpoints can only be changed
through the allow-listed custom host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from gateway.errors import BadRequest, Unauthorized
from gateway.fields import HOST, Secret, Url
from gateway.provider import ProviderSettings
from gateway.resources import GCS_PREFIX_PATTERN

HEADER_PREFIX = "x-portkey-vertex-"
SERVICE_ACCOUNT_HEADER = "x-portkey-vertex-service-account-json"
# Header -> setting. The prefix header is this gateway's own addition.
HEADERS = {
    "x-portkey-vertex-project-id": "vertex_project_id",
    "x-portkey-vertex-region": "vertex_region",
    SERVICE_ACCOUNT_HEADER: "vertex_service_account_json",
    "x-portkey-vertex-storage-bucket-name": "vertex_storage_bucket_name",
    "x-portkey-vertex-storage-prefix": "vertex_storage_prefix",
}
# Google's OAuth token endpoints: the only ones a caller's key file may name.
GOOGLE_TOKEN_URIS = frozenset(
    {
        "https://oauth2.googleapis.com/token",
        "https://accounts.google.com/o/oauth2/token",
        "https://www.googleapis.com/oauth2/v4/token",
    }
)

# Each of these lands in a host name, a URL path or an object name: no "/", no "@".
Region = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{1,62}$"), HOST]
ProjectId = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9.:-]{0,99}$")]
Bucket = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")]
Prefix = Annotated[str, Meta(pattern=r"^[^/\x00-\x1f][^\x00-\x1f]{0,511}$|^$")]


class VertexSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    vertex_project_id: ProjectId | None = None  # default: the key file's project_id
    vertex_region: Region = "us-central1"
    # The service account key file's JSON, or (virtual keys only) its path. Without one
    # (virtual keys only), Google's application default credentials are used.
    vertex_service_account_json: Secret | None = None
    vertex_storage_bucket_name: Bucket | None = None
    # Where uploaded files live in the bucket.
    vertex_storage_prefix: Prefix = "finetune-gateway/"
    # Virtual keys only: the Vertex AI base URL in place of
    # https://{region}-aiplatform.googleapis.com (custom_host, when set, wins), and the
    # Cloud Storage base URL in place of https://storage.googleapis.com. Without the
    # latter, STORAGE_EMULATOR_HOST is honoured as gcloud-aio-storage does.
    endpoint_url: Url | None = None
    storage_endpoint_url: Url | None = None
    # With the config's credentials, the only gs:// prefixes ("gs://bucket/" is the whole
    # bucket) a request may name as training or validation data, besides the staging
    # bucket's prefix, and the only other buckets portkey_options may stage to.
    allowed_gcs_uris: tuple[Annotated[str, Meta(pattern=GCS_PREFIX_PATTERN)], ...] = ()

    @property
    def prefix(self) -> str:
        prefix = self.vertex_storage_prefix
        return prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def base_url(self) -> str:
        if self.custom_host:
            return self.custom_host.rstrip("/")
        if self.endpoint_url:
            return self.endpoint_url.rstrip("/")
        if self.vertex_region == "global":
            return "https://aiplatform.googleapis.com"
        return f"https://{self.vertex_region}-aiplatform.googleapis.com"


def settings_from_headers(headers: Mapping[str, str]) -> VertexSettings:
    fields = {name: headers[h] for h, name in HEADERS.items() if headers.get(h)}
    if "vertex_service_account_json" not in fields:
        raise Unauthorized(
            f"No Vertex AI credentials in the request: send '{SERVICE_ACCOUNT_HEADER}' "
            "with the service account key file's JSON, or use a virtual key",
            code="missing_provider_credentials",
        )
    try:
        return msgspec.convert(fields, VertexSettings)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$.")
        setting = where.rstrip("`")
        header = next((h for h, name in HEADERS.items() if name == setting), None)
        raise BadRequest(
            f"Invalid '{header or setting}': {message}", param=header, code="invalid_value"
        ) from None


def service_account_info(settings: VertexSettings, *, from_request: bool) -> dict[str, Any] | None:
    """The key file's contents when given inline; refuses what a request may not set."""
    raw = settings.vertex_service_account_json
    if from_request:
        _check_request_settings(settings)
    if raw is None or not raw.lstrip().startswith("{"):
        return None  # a path (virtual keys only) or application default credentials
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise BadRequest(
            "The Vertex AI service account is not a key file's JSON object",
            param=SERVICE_ACCOUNT_HEADER if from_request else None,
            code="invalid_service_account",
        )
    if from_request:
        _check_request_key(info)
    return info


def _check_request_settings(settings: VertexSettings) -> None:
    raw = settings.vertex_service_account_json
    if raw is None or not raw.lstrip().startswith("{"):
        raise BadRequest(
            f"'{SERVICE_ACCOUNT_HEADER}' must hold the service account key file's JSON",
            param=SERVICE_ACCOUNT_HEADER,
            code="invalid_service_account",
        )
    for name in ("endpoint_url", "storage_endpoint_url"):
        if getattr(settings, name) is not None:
            raise BadRequest(
                f"'{name}' can only be set in a virtual key; use x-portkey-custom-host",
                param=name,
                code="setting_not_allowed",
            )


def _check_request_key(info: dict[str, Any]) -> None:
    if info.get("type") != "service_account":
        raise BadRequest(
            "A service account key sent with a request must have type 'service_account'",
            param=SERVICE_ACCOUNT_HEADER,
            code="invalid_service_account",
        )
    token_uri = info.get("token_uri", "https://oauth2.googleapis.com/token")
    if token_uri not in GOOGLE_TOKEN_URIS:
        raise BadRequest(
            f"The service account's token_uri '{token_uri}' is not Google's token endpoint",
            param=SERVICE_ACCOUNT_HEADER,
            code="invalid_service_account",
        )
    for key in ("client_email", "private_key"):
        if not isinstance(info.get(key), str):
            raise BadRequest(
                f"The service account key has no '{key}'",
                param=SERVICE_ACCOUNT_HEADER,
                code="invalid_service_account",
            )
