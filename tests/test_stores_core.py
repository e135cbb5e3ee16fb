"""gateway.stores stays importable without any store SDK."""

from __future__ import annotations

import subprocess
import sys


def test_stores_import_without_aws_sdks() -> None:
    code = (
        "import sys\n"
        "sys.modules['botocore'] = sys.modules['aiobotocore'] = None\n"
        "import gateway.stores.s3\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
