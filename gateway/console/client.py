"""The console's HTTP client for a running gateway: OpenAI's API, as the SDK calls it.

Standard library only (``http.client``): the console is a short-lived, synchronous
program, and an upload streams from disk in chunks with a callback per chunk, so the
progress bar moves and memory does not grow with the file.
"""

from __future__ import annotations

import http.client
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

Json = dict[str, Any]
DEFAULT_BASE_URL = "http://127.0.0.1:8787/v1"
_CHUNK = 1024 * 1024


class GatewayError(Exception):
    """The gateway answered with an error (its OpenAI envelope), or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Client:
    """``base_url`` ends in ``/v1``, as the SDK's does; ``headers`` route the calls
    (``x-portkey-virtual-key``, ``x-portkey-provider``, ...)."""

    base_url: str
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0

    @classmethod
    def from_environment(
        cls, base_url: str | None, api_key: str | None, virtual_key: str | None
    ) -> Client:
        """Flags first, then the variables the OpenAI SDK reads, then this machine."""
        headers = {"x-portkey-virtual-key": virtual_key} if virtual_key else {}
        return cls(
            base_url=(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL),
            api_key=api_key or os.environ.get("OPENAI_API_KEY"),
            headers=headers,
        )

    def with_virtual_key(self, virtual_key: str) -> Client:
        return Client(
            self.base_url,
            self.api_key,
            {**self.headers, "x-portkey-virtual-key": virtual_key},
            self.timeout,
        )

    # ---- calls ---------------------------------------------------------------------
    def get(self, path: str, **query: Any) -> Json:
        params = {k: v for k, v in query.items() if v is not None}
        suffix = f"?{urlencode(params)}" if params else ""
        return self._call("GET", path + suffix)

    def post(self, path: str, body: Json | None = None) -> Json:
        data = json.dumps(body or {}).encode()
        return self._call("POST", path, data, {"Content-Type": "application/json"})

    def upload(
        self, path: Path, purpose: str, progress: Callable[[int], None] = lambda n: None
    ) -> Json:
        """POST /files, the file streamed from disk; ``progress`` gets each chunk's size."""
        boundary = f"ftg-{uuid.uuid4().hex}"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="{_quoted(path.name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            with path.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    yield chunk
                    progress(len(chunk))
            yield tail

        length = len(head) + path.stat().st_size + len(tail)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length),
        }
        return self._call("POST", "/files", body(), headers)

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Json:
        url = urlsplit(self.base_url.rstrip("/") + path)
        connection_class = (
            http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(url.netloc, timeout=self.timeout)
        sent = {**self.headers, **(headers or {})}
        if self.api_key:
            sent["Authorization"] = f"Bearer {self.api_key}"
        target = url.path + (f"?{url.query}" if url.query else "")
        try:
            connection.request(method, target, body=body, headers=sent)
            response = connection.getresponse()
            raw = response.read()
        except OSError as exc:
            raise GatewayError(f"cannot reach the gateway at {self.base_url}: {exc}") from None
        finally:
            connection.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise GatewayError(
                f"the gateway answered {response.status} with no JSON", response.status
            ) from None
        if response.status >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise GatewayError(message or f"HTTP {response.status}", response.status)
        if not isinstance(answer, dict):
            raise GatewayError("the gateway answered something that is not an object")
        return answer


def _quoted(name: str) -> str:
    return name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
