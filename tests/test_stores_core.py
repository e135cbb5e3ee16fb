"""gateway.stores stays importable without any store SDK (aiobotocore, gcloud-aio)."""

from __future__ import annotations

import subprocess
import sys


def test_stores_import_without_store_sdks() -> None:
    code = (
        "import sys\n"
        "for name in ('botocore', 'aiobotocore', 'gcloud', 'gcloud.aio', 'jwt'):\n"
        "    sys.modules[name] = None\n"
        "import gateway.stores.s3, gateway.stores.gcs, gateway.stores.google_auth\n"
        "import gateway.stores.local\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
