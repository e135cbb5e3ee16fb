"""S3 staging: where the gateway keeps files, and the streaming multipart writer.

Layout under the configured prefix:

    <prefix>files/<stem>/<filename>           an uploaded original (what files.list shows)
    <prefix>staged/<source>.<format>.jsonl    its conversion for one Bedrock line format
    <prefix>output/<job name>/                a job's output, unless the job names one

A ``stem`` is the upload time in milliseconds and 16 random hex digits, so S3's key order
is upload order and the file id (the stem, base64url) is short and URL-safe. Staged keys
use only the characters Bedrock's S3Uri pattern allows.

Every write streams through ``write_multipart``: parts of ``PART_SIZE`` (S3 wants at
least 5 MiB), a few in flight at once, memory bounded by those parts whatever the file
size; when the source fails (a bad line, a cut connection, a cancelled request) the
multipart upload is aborted, so no partial object is ever left behind.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from gateway.errors import NotFound
from gateway.ids import decode_id, encode_id
from gateway.metrics import note_staged
from gateway.stores import s3 as stores_s3
from gateway_bedrock.aws import client_error
from gateway_bedrock.formats import LineFormat

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# S3's smallest part, two in flight while the next fills: peak memory is what a 1 GB
# upload measured to need to keep pace with the store (docs/benchmarks.md). Times S3's
# 10,000 parts that is 48 GiB, well past the default upload limit of 8 GiB.
PART_SIZE = 5 * MiB
PARTS_IN_FLIGHT = 2
READ_CHUNK = 1 * MiB
# S3 checks every part against it (aws.py: payloads are not hashed with SHA-256). CRC32
# is zlib's, so no extra package; botocore prefers awscrt's when installed.
CHECKSUM = "CRC32"
FILE_ID_PREFIX = "file-"
_STEM = re.compile(r"\d{13}[0-9a-f]{16}")
# S3 keys hold at most 1,024 bytes: longer source URIs keep only their digest.
_MAX_URI_IN_KEY = 600
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


def new_stem(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{ms:013d}{secrets.token_hex(8)}"


def file_id(stem: str) -> str:
    return encode_id(FILE_ID_PREFIX, stem)


def stem_of(public_id: str) -> str:
    """The stem behind a file id; a 404 for anything this gateway could not have issued."""
    return decode_id(FILE_ID_PREFIX, public_id, what="file", shape=_STEM)


def created_at_of(stem: str) -> int:
    return int(stem[:13]) // 1000


def safe_filename(filename: str) -> str:
    """The name as a single key segment: no separators or control characters."""
    return _UNSAFE_NAME.sub("_", filename)[:255] or "upload.jsonl"


@dataclass(frozen=True, slots=True)
class Layout:
    bucket: str
    prefix: str  # "" or ends with "/"

    @property
    def files_prefix(self) -> str:
        return f"{self.prefix}files/"

    def file_key(self, stem: str, filename: str) -> str:
        return f"{self.files_prefix}{stem}/{safe_filename(filename)}"

    def staged_key(self, source: str, line_format: LineFormat) -> str:
        return f"{self.prefix}staged/{source}.{line_format.value}.jsonl"

    def staged_prefix(self, source: str) -> str:
        return f"{self.prefix}staged/{source}."

    def output_uri(self, job_name: str) -> str:
        # Job names may hold "+", which Bedrock's S3Uri pattern does not allow.
        return self.uri(f"{self.prefix}output/{job_name.replace('+', '-')}/")

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def source_of(self, uri: str) -> str | None:
        """What a staged object was converted from, as the user named it: the file id of
        an upload of ours, or the ``s3://`` URI they gave (carried in the key itself, so
        no call is needed); None for any other URI."""
        head = self.uri(f"{self.prefix}staged/")
        if not uri.startswith(head):
            return None
        source = uri[len(head) :].split(".", 1)[0]
        if _STEM.fullmatch(source):
            return file_id(source)
        return source_uri_of(source)


def staged_source_for_uri(uri: str, etag: str) -> str:
    """The staged-key name for a user's own ``s3://`` object at one version (its ETag).

    The digest makes a changed object a new source, converted again; the URI itself
    follows in base64url when it fits, so the job can name the user's URI back.
    """
    digest = hashlib.sha256(f"{uri}\n{etag}".encode()).hexdigest()[:16]
    if len(uri) > _MAX_URI_IN_KEY:
        return f"s3-{digest}"
    return f"s3-{digest}-{encode_id('u', uri)}"


def source_uri_of(source: str) -> str | None:
    prefix, _, encoded = source.partition("-")
    digest, _, encoded = encoded.partition("-")
    if prefix != "s3" or not encoded or len(digest) != 16:
        return None
    try:
        uri = decode_id("u", encoded, what="source")
    except NotFound:
        return None
    return uri if uri.startswith("s3://") else None


def parse_s3_uri(uri: str) -> tuple[str, str] | None:
    """``s3://bucket/key`` as (bucket, key); None when it is not one."""
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[len("s3://") :].partition("/")
    return (bucket, key) if bucket and key and not key.endswith("/") else None


class StoredFile(msgspec.Struct, frozen=True):
    key: str
    stem: str
    filename: str
    size: int


def stored_file(key: str, size: int, layout: Layout) -> StoredFile | None:
    rest = key[len(layout.files_prefix) :]
    stem, _, name = rest.partition("/")
    if not _STEM.fullmatch(stem) or not name or "/" in name:
        return None  # not something this gateway wrote: never listed
    return StoredFile(key, stem, name, size)


def file_metadata(filename: str, purpose: str, created_at: int) -> dict[str, str]:
    # S3 user metadata travels in headers, which must be ASCII: percent-encode the name.
    return {"filename": quote(filename, safe=""), "purpose": purpose, "created-at": str(created_at)}


async def write_multipart(
    client: Any,
    bucket: str,
    key: str,
    chunks: AsyncIterator[bytes],
    *,
    metadata: dict[str, str] | None = None,
    content_type: str = "application/jsonl",
    parts_in_flight: int = PARTS_IN_FLIGHT,
) -> int:
    """Stream ``chunks`` into one new object (``gateway.stores.s3``); the bytes written,
    or nothing on failure. ``chunks`` is consumed and closed here. Two writers at once
    (``staging``) take one part in flight each."""
    return await stores_s3.write_multipart(
        client,
        bucket,
        key,
        chunks,
        part_size=PART_SIZE,
        parts_in_flight=parts_in_flight,
        on_part=note_staged,
        checksum=CHECKSUM,
        Metadata=metadata or {},
        ContentType=content_type,
    )


aclose = stores_s3.aclose


def read_chunks(body: Any, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
    """An S3 object's body as chunks; closes the connection when done or abandoned."""
    return stores_s3.read_chunks(body, chunk_size)


async def exists(client: Any, bucket: str, key: str) -> bool:
    try:
        await client.head_object(Bucket=bucket, Key=key)
    except client_error() as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in (
            "404",
            "NoSuchKey",
            "NotFound",
        ):
            return False
        raise
    return True


async def list_keys(client: Any, bucket: str, prefix: str) -> AsyncIterator[tuple[str, int]]:
    """Every (key, size) under ``prefix``, in key order, 1,000 per call."""
    token: str | None = None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        answer = await client.list_objects_v2(Bucket=bucket, Prefix=prefix, **extra)
        for item in answer.get("Contents", []):
            yield item["Key"], int(item["Size"])
        token = answer.get("NextContinuationToken")
        if not answer.get("IsTruncated") or not token:
            return


async def delete_keys(client: Any, bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        answer = await client.delete_objects(
            Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
        )
        # S3 answers 200 and lists the keys it refused: a file it kept is not deleted.
        refused = answer.get("Errors") or []
        if refused:
            first = refused[0]
            error = {"Code": first.get("Code", ""), "Message": first.get("Message", "")}
            raise client_error()({"Error": error}, "DeleteObjects")
