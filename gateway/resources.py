"""Cloud resources a request names (bucket URIs, role ARNs), held to what the config lists.

With the config's credentials, an s3:// or gs:// URI or a role ARN in a request is the
gateway's identity reading or writing there: it must lie within what the virtual key
lists, or the caller could reach any bucket those credentials can. Matching is by
bucket, then by key prefix on "/" boundaries, after refusing ambiguous keys ("..",
"//", control characters), so ``s3://bucket-evil`` never matches ``s3://bucket/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.errors import BadRequest

# A listed prefix: scheme://bucket/ then whole "/"-ended segments, none "." or "..".
S3_PREFIX_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/(?:(?!\.\.?/)[^/\s\x00-\x1f\x7f]+/)*$"
GCS_PREFIX_PATTERN = (
    r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/(?:(?!\.\.?/)[^/\s\x00-\x1f\x7f]+/)*$"
)
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"

_UNSAFE_KEY = re.compile(r"[\x00-\x1f\x7f\\]")


def split_uri(uri: str, scheme: str) -> tuple[str, str] | None:
    """``scheme://bucket/key`` as (bucket, key) when unambiguous; None otherwise."""
    head = f"{scheme}://"
    if not uri.startswith(head):
        return None
    bucket, slash, key = uri[len(head) :].partition("/")
    if not bucket or not slash or _UNSAFE_KEY.search(uri):
        return None
    segments = key.split("/")
    # "" inside (a "//") or "."/".." segments: a store or a later tool could read them
    # differently from this comparison.
    if any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", ".."):
        return None
    return bucket, key


def uri_allowed(uri: str, allowed: Iterable[str], scheme: str) -> bool:
    """True when ``uri`` lies under one of ``allowed`` (each "scheme://bucket/prefix/")."""
    location = split_uri(uri, scheme)
    if location is None:
        return False
    bucket, key = location
    for prefix in allowed:
        listed = split_uri(prefix, scheme)
        if listed is None:
            continue
        listed_bucket, listed_key = listed
        if listed_key and not listed_key.endswith("/"):
            listed_key += "/"  # a prefix is a folder: "data" never covers "database"
        if bucket == listed_bucket and key.startswith(listed_key):
            return True
    return False


def require_uri_allowed(uri: str, allowed: Iterable[str], scheme: str, *, param: str) -> None:
    if not uri_allowed(uri, allowed, scheme):
        raise not_allowed(f"'{uri}' is not among the locations this virtual key allows", param)


def require_bucket_allowed(
    bucket: str | None, own: str | None, allowed: Iterable[str], scheme: str, *, param: str
) -> None:
    """A staging bucket a request picks must be the virtual key's own or a listed one."""
    if bucket is None or bucket == own:
        return
    listed = {location[0] for uri in allowed if (location := split_uri(uri, scheme))}
    if bucket not in listed:
        raise not_allowed(
            f"The bucket '{bucket}' is not among those this virtual key allows", param
        )


def own_prefix(scheme: str, bucket: str | None, prefix: str) -> tuple[str, ...]:
    """The virtual key's staging location as an allowed prefix ("" prefix: the bucket)."""
    if not bucket:
        return ()
    return (
        f"{scheme}://{bucket}/{prefix if not prefix or prefix.endswith('/') else prefix + '/'}",
    )


def not_allowed(message: str, param: str) -> BadRequest:
    return BadRequest(message, param=param, code="resource_not_allowed")
