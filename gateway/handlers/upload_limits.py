"""Upload slots shared fairly, and a minimum rate for the bytes of an upload.

An upload holds a slot of the process (``limits.max_concurrent_uploads``) for as long
as its body takes. Two ways one caller could keep every other one out, both closed here:

- by opening them all: a caller (its gateway key, or its address on an open gateway)
  holds at most ``limits.max_concurrent_uploads_per_key`` at once; one more is a 429;
- by sending slowly: ``limits.client_body_timeout`` ends silence, not a trickle, so after
  ``limits.upload_rate_grace_seconds`` the body's average rate must stay at or above
  ``limits.min_upload_bytes_per_second``, or the upload ends with a 408.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from gateway import keys
from gateway.config import LimitsConfig
from gateway.errors import RateLimited, RequestTimeout

# Seconds a client turned away for lack of a slot is told to wait: an upload lasts a while.
RETRY_UPLOAD_AFTER = 5


class UploadSlots:
    """The process's upload slots, and how many each caller holds."""

    def __init__(self, limits: LimitsConfig) -> None:
        self._total = limits.max_concurrent_uploads
        self._per_caller = limits.max_concurrent_uploads_per_key
        self._held: Counter[str] = Counter()

    @contextmanager
    def taken(self, caller: str) -> Iterator[None]:
        """One slot for ``caller`` for the block, or a 429 before any of the body is read."""
        if self._held[caller] >= self._per_caller:
            raise RateLimited(
                f"This caller is already sending {self._per_caller} uploads, as many as "
                "one may at once (limits.max_concurrent_uploads_per_key): retry shortly",
                code="too_many_uploads",
                headers={"Retry-After": str(RETRY_UPLOAD_AFTER)},
            )
        if self._held.total() >= self._total:
            raise RateLimited(
                "This gateway is receiving as many uploads as it takes at once "
                "(limits.max_concurrent_uploads): retry shortly",
                code="too_many_uploads",
                headers={"Retry-After": str(RETRY_UPLOAD_AFTER)},
            )
        self._held[caller] += 1
        try:
            yield
        finally:
            self._held[caller] -= 1
            if not self._held[caller]:
                del self._held[caller]


def caller_of(request: web.Request) -> str:
    """Whose upload this is: the gateway key's name, or the client's address."""
    gateway_key = request.get(keys.GATEWAY_KEY)
    if gateway_key is not None:
        return f"key:{gateway_key.name}"
    return f"address:{request.remote or '-'}"


class RateFloor:
    """The deadline by which the next bytes of a body must arrive to keep its rate."""

    def __init__(self, limits: LimitsConfig) -> None:
        self._started = time.monotonic()
        self._grace = limits.upload_rate_grace_seconds
        self._rate = limits.min_upload_bytes_per_second
        self._silence = limits.client_body_timeout

    def wait_allowed(self, received: int) -> float:
        """Seconds the next read may take: until the average would fall below the floor
        (never before the grace period ends), and at most the silence timeout."""
        if self._rate <= 0:
            return self._silence
        due = self._started + max(self._grace, received / self._rate)
        return max(0.0, min(self._silence, due - time.monotonic()))

    def too_slow(self, received: int) -> RequestTimeout:
        return RequestTimeout(
            f"The upload is arriving slower than {self._rate} bytes a second "
            f"(limits.min_upload_bytes_per_second), {received} bytes so far",
            param="file",
            code="request_too_slow",
        )
