"""Retries and timeouts for upstream calls: one policy per request, the same for every provider.

A request's policy (``CallPolicy``: the ``[upstream]`` defaults, overridden per virtual key,
named config or inline ``x-portkey-config``) is put in a context variable by core for the
provider call, so every upstream call made while serving it, through ``gateway.upstream``
or through a provider's own SDK (``with_retries``), retries and times out the same way.
Work outside any request gets the built-in defaults; managed mode's background staging
opens its target through core, which applies that virtual key's policy without the clock
of the request that started it.

What is retried, and how:

- only calls that are safe to repeat: reads, cancels, deletes, and creates the upstream
  makes idempotent (a Bedrock ``clientRequestToken``, a client's ``Idempotency-Key``); a
  body that is a one-shot stream (a file upload) cannot be sent twice, so it never is;
- on an answer whose status is in ``on_status_codes`` and on connection failures (refused,
  reset, disconnected). A timeout is not retried: an upstream that stalled once is likely to
  stall again, and each retry would cost the client another ``read_timeout``;
- after a wait with exponential backoff and full jitter, or the upstream's ``Retry-After``
  (``retry-after-ms`` too) when it sends one. A ``Retry-After`` longer than ``max_backoff``
  is not waited out: the answer goes to the client, with its ``Retry-After``, at once;
- never past ``max_total_backoff`` of waiting, nor past the request's ``request_timeout``.

Each call's attempts are noted for the response header ``x-upstream-attempts``.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec

from gateway.errors import UpstreamTimeout

T = TypeVar("T")

MAX_ATTEMPTS = 10
DEFAULT_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
# Keys of a virtual key, named config or inline config that set the policy, not the provider.
POLICY_KEYS = frozenset({"retry", "connect_timeout", "read_timeout", "request_timeout"})

_Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[upstream.retry]``, or a virtual key's or config's ``retry`` table."""

    # Tries in all, the first one included: 1 means never retry.
    attempts: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS)] = 3
    on_status_codes: frozenset[Annotated[int, msgspec.Meta(ge=400, le=599)]] = DEFAULT_STATUS_CODES
    # Wait what the upstream's Retry-After says (up to max_backoff) instead of the backoff.
    use_retry_after_headers: bool = True
    # The first retry waits up to this many seconds, each later one up to twice the last.
    backoff: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    max_backoff: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    max_total_backoff: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0


class CallPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a request's upstream calls retry and time out (the ``[upstream]`` section)."""

    connect_timeout: _Seconds = 10.0
    # Longest silence while reading an upstream's answer (a stalled upstream is a 504).
    read_timeout: _Seconds = 120.0
    # The whole request, retries and uploads included; None for no limit.
    request_timeout: _Seconds | None = None
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)


def overlay(base: CallPolicy, given: Mapping[str, Any]) -> CallPolicy:
    """``base`` with the ``POLICY_KEYS`` given replaced; ``retry`` is merged key by key.

    Raises ``msgspec.ValidationError`` naming the path of a bad value (``$.retry.attempts``).
    """
    merged: dict[str, Any] = msgspec.to_builtins(base)
    for key in POLICY_KEYS & given.keys():
        value = given[key]
        if key == "retry" and isinstance(value, dict):
            value = {**merged["retry"], **value}
        merged[key] = value
    return msgspec.convert(merged, CallPolicy)


# ---- the policy in force ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _InForce:
    policy: CallPolicy
    deadline: float | None  # on the event loop's clock; None for no total limit


_in_force: ContextVar[_InForce | None] = ContextVar("finetune_gateway_call_policy", default=None)
# True inside an attempt of a call that retries as a whole: calls it makes try once.
_inside_attempt: ContextVar[bool] = ContextVar("finetune_gateway_inside_attempt", default=False)
# Attempts of each upstream call made for the current request (set per request).
_attempts: ContextVar[list[int] | None] = ContextVar("finetune_gateway_attempts", default=None)
_DEFAULT = _InForce(CallPolicy(), None)


def current_policy() -> CallPolicy:
    return (_in_force.get() or _DEFAULT).policy


def collect_attempts() -> list[int]:
    """Start noting the current request's upstream attempts; returns the list."""
    attempts: list[int] = []
    _attempts.set(attempts)
    return attempts


@asynccontextmanager
async def policy_applied(policy: CallPolicy, *, enforce_total: bool = True) -> AsyncIterator[None]:
    """Upstream calls inside follow ``policy``; past its ``request_timeout``, a 504.

    ``enforce_total=False`` for work that may outlive the request (a target opened for
    managed mode's background staging): it keeps the policy without the request's clock.
    """
    total = policy.request_timeout if enforce_total else None
    loop = asyncio.get_running_loop()
    deadline = None if total is None else loop.time() + total
    token = _in_force.set(_InForce(policy, deadline))
    clock = asyncio.timeout_at(deadline)
    try:
        async with clock:
            yield
    except TimeoutError:
        if clock.expired():
            raise UpstreamTimeout(
                f"The request did not finish within its request_timeout of {total:g} s",
                code="request_timeout_exceeded",
            ) from None
        raise
    finally:
        _in_force.reset(token)


# ---- retrying ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt worth retrying: an upstream's status, or None for a lost connection."""

    status: int | None
    retry_after: float | None = None  # seconds, as the upstream asked


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    idempotent: bool,
    failure_of: Callable[[BaseException], Failure | None],
    answer_failure: Callable[[T], Failure | None] = lambda _: None,
    discard: Callable[[T], None] = lambda _: None,
) -> T:
    """``attempt()`` until it succeeds or the policy in force says stop.

    ``failure_of`` says whether an exception is a retryable failure; ``answer_failure``
    whether an answer is (an HTTP response with a 503), which ``discard`` then releases.
    Only an ``idempotent`` call is ever repeated. The last failure is the caller's, as it
    came: an exception raised, an answer returned.
    """
    schedule = _Schedule(idempotent)
    try:
        while True:
            schedule.made += 1
            token = _inside_attempt.set(True)
            try:
                result = await attempt()
            except Exception as exc:
                failure = failure_of(exc)
                wait = None if failure is None else schedule.wait_before_retry(failure)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                continue
            finally:
                _inside_attempt.reset(token)
            failure = answer_failure(result)
            wait = None if failure is None else schedule.wait_before_retry(failure)
            if wait is None:
                return result
            discard(result)
            await asyncio.sleep(wait)
    finally:
        if (noted := _attempts.get()) is not None:
            noted.append(schedule.made)


class _Schedule:
    """The attempts of one call under the policy in force, and the waits between them."""

    def __init__(self, idempotent: bool) -> None:
        in_force = _in_force.get() or _DEFAULT
        self.retry = in_force.policy.retry
        self.deadline = in_force.deadline
        # A call inside an attempt of an outer one tries once: the outer call retries.
        self.limit = self.retry.attempts if idempotent and not _inside_attempt.get() else 1
        self.made = 0
        self.waited = 0.0

    def wait_before_retry(self, failure: Failure) -> float | None:
        """Seconds to wait before the next attempt; None when there is none."""
        if self.made >= self.limit:
            return None
        if failure.status is not None and failure.status not in self.retry.on_status_codes:
            return None
        if failure.retry_after is not None and self.retry.use_retry_after_headers:
            if failure.retry_after > self.retry.max_backoff:
                return None  # the client is told to wait that long; not held here meanwhile
            wait = failure.retry_after
        else:
            ceiling = min(self.retry.max_backoff, self.retry.backoff * 2 ** (self.made - 1))
            wait = random.uniform(0, ceiling)  # full jitter
        if self.waited + wait > self.retry.max_total_backoff:
            return None
        if self.deadline is not None and asyncio.get_running_loop().time() + wait >= self.deadline:
            return None
        self.waited += wait
        return wait


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """An answer's ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


# ---- an inline x-portkey-config's policy -------------------------------------------------

INLINE_POLICY_KEYS = frozenset({"retry", "request_timeout"})


class _InlineRetry(msgspec.Struct, forbid_unknown_fields=True):
    """What an inline config may set in "retry": Portkey's keys, nothing about backoff."""

    attempts: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS)] | None = None
    on_status_codes: list[Annotated[int, msgspec.Meta(ge=400, le=599)]] | None = None
    use_retry_after_headers: bool | None = None


class _InlinePolicy(msgspec.Struct, forbid_unknown_fields=True):
    retry: _InlineRetry | None = None
    # Milliseconds, as Portkey's config takes it (the TOML file says seconds).
    request_timeout: Annotated[float, msgspec.Meta(gt=0, le=86_400_000)] | None = None


def inline_overlay(base: CallPolicy, given: Mapping[str, Any]) -> CallPolicy:
    """``base`` with an inline config's ``retry`` (Portkey's keys only) and
    ``request_timeout`` (milliseconds); a configured ``request_timeout`` is only shortened.

    Raises ``msgspec.ValidationError`` naming the path of a bad value.
    """
    parsed = msgspec.convert(dict(given), _InlinePolicy)
    fields: dict[str, Any] = {}
    if parsed.retry is not None:
        retry = msgspec.structs.asdict(parsed.retry)
        fields["retry"] = {k: v for k, v in retry.items() if v is not None}
    if parsed.request_timeout is not None:
        seconds = parsed.request_timeout / 1000
        if base.request_timeout is not None:
            seconds = min(seconds, base.request_timeout)
        fields["request_timeout"] = seconds
    return overlay(base, fields)
