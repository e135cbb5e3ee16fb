"""Which gs:// locations a request may name with the config's credentials.

A gs:// training file is read by Vertex as the config's project, and managed mode's
``portkey_options`` may pick the bucket files are staged to: either would otherwise let
a caller use anything that project can reach. Checked before any Google call.
"""

from __future__ import annotations

from gateway.resources import own_prefix, require_bucket_allowed
from gateway_vertex.settings import VertexSettings

BUCKET_OPTION = "x-portkey-vertex-storage-bucket-name"


def gcs_uris(settings: VertexSettings) -> tuple[str, ...]:
    """The listed prefixes, plus the virtual key's own staging bucket and prefix."""
    own = own_prefix("gs", settings.vertex_storage_bucket_name, settings.vertex_storage_prefix)
    return settings.allowed_gcs_uris + own


def check_bucket_override(
    original: VertexSettings, overridden: VertexSettings, *, param: str
) -> None:
    require_bucket_allowed(
        overridden.vertex_storage_bucket_name,
        original.vertex_storage_bucket_name,
        original.allowed_gcs_uris,
        "gs",
        param=f"{param.rpartition('.')[0] or param}.{BUCKET_OPTION}",
    )
