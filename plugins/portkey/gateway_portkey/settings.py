"""Managed mode's settings: where records and file bytes live (``[providers.portkey]``).

They come from the config, never from a request: ``settings_from_headers`` gives the
defaults, and core lays the config's ``[providers.portkey]`` table under them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from msgspec import Meta

from gateway.fields import Secret, Url
from gateway.provider import ProviderSettings


class ManagedSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Records (SQLite) and file bytes (local store) go here unless set otherwise below.
    data_dir: str = "finetune-gateway-data"
    # "postgresql://user@host/db" for several gateway processes, or a SQLite file path.
    database: str | None = None
    # "s3://bucket/prefix/", "gs://bucket/prefix/", or a directory.
    store: str | None = None
    # For an s3:// store; where left out, the AWS default chain (environment, profile).
    store_aws_access_key_id: Secret | None = None
    store_aws_secret_access_key: Secret | None = None
    store_aws_session_token: Secret | None = None
    store_aws_region: str | None = None
    store_endpoint_url: Url | None = None  # an S3-compatible endpoint (MinIO, moto)
    # For a gs:// store: a service account key (a path or the JSON itself); where left
    # out, the default application credentials. STORAGE_EMULATOR_HOST, when set, wins
    # over both (no credentials are sent to an emulator), as in gcloud-aio.
    store_service_account_json: Secret | None = None
    # A job staging for longer than this without a heartbeat from its process (the
    # process beats every sixth of it) has lost that process: it is failed
    # (staging_interrupted) and what it had staged is deleted.
    staging_lease_seconds: Annotated[float, Meta(gt=0)] = 90.0

    def __repr__(self) -> str:
        # Settings end up in pool keys and tracebacks: never show the secrets (a DSN
        # may carry a password too).
        shown = {"data_dir": self.data_dir, "store": self.store_location()}
        return f"ManagedSettings({shown})"

    def database_dsn(self) -> str:
        return self.database or str(Path(self.data_dir) / "gateway.sqlite3")

    def records_database(self) -> str:
        return self.database_dsn()

    def store_location(self) -> str:
        return self.store or str(Path(self.data_dir) / "files")
