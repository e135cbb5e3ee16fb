"""The AWS SDK's session and HTTP session, shared by every AWS client of the process.

Bedrock's clients and managed mode's S3 store make their clients here, so each botocore
data file is parsed once, every connection is held to the egress policy, and one botocore
attempt is one HTTP attempt. aiobotocore is imported on first use: core stays importable
without it.
"""

from __future__ import annotations

import functools
import io
from typing import Any

from gateway.egress import aiobotocore_session_class
from gateway.upstream import without_silent_retries


@functools.cache
def aws_session() -> Any:
    """One botocore session for every client of the process: a session parses botocore's
    data files (endpoints.json alone is 7 MB in memory) once, where one per client parsed
    them for each, and ``LeanLoader`` keeps only the part of them these clients read.
    Credentials are the client's own (or the process's chain, the same
    for every client), never the session's."""
    from aiobotocore.session import get_session  # type: ignore[import-untyped]
    from botocore.loaders import Loader  # type: ignore[import-untyped]

    class LeanLoader(Loader):  # type: ignore[misc]  # untyped base
        def load_data_with_path(self, name: str) -> tuple[Any, str]:
            data, path = super().load_data_with_path(name)
            if name == "endpoints":
                # The legacy endpoint table of every AWS service: 7 MB of dicts, held as
                # long as the session, of which these clients (and the credential
                # chain's STS) read three entries. A service left out resolves as any
                # service missing from it does, by the partition's defaults.
                for partition in data.get("partitions", []):
                    services = partition.get("services", {})
                    partition["services"] = {k: v for k, v in services.items() if k in _SERVICES}
            return data, path

    session = get_session()
    session.register_component("data_loader", LeanLoader())
    return session


# What the gateway's clients are: Bedrock's, S3 (Bedrock staging, managed mode's store)
# and the credential chain's STS.
_SERVICES = frozenset({"s3", "bedrock", "sts"})


@functools.cache
def one_try_http_session_class() -> type:
    """aiobotocore's HTTP session without aiohttp's silent retry of a dropped connection
    (see ``gateway.upstream.without_silent_retries``): one botocore attempt is one."""
    from aiobotocore.httpsession import AIOHTTPSession  # type: ignore[import-untyped]

    class OneTryHTTPSession(AIOHTTPSession):  # type: ignore[misc]  # untyped base
        async def _get_session(self, proxy_url: Any) -> Any:
            session = await super()._get_session(proxy_url)
            without_silent_retries(session)
            return session

        async def send(self, request: Any) -> Any:
            body = request.body
            if type(body) is io.BytesIO and body.tell() == 0:
                # botocore wraps a part's bytes in a BytesIO, which aiohttp copies whole
                # (getbuffer()) before sending: a second copy of every part in flight.
                # The bytes themselves go out as they are (getvalue() shares them).
                request.body = body.getvalue()
            return await super().send(request)

    # Every connection held to the gateway's egress policy (gateway.egress).
    return aiobotocore_session_class(OneTryHTTPSession)
