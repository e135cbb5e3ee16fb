"""Training files on GCS: where they live, what their ids are, and how an upload is staged.

Layout under the configured prefix:

    {prefix}files/{uid}.jsonl    the file as uploaded (what ``content`` returns)
    {prefix}vertex/{uid}.jsonl   the same examples in Gemini's format (OpenAI uploads only)

``uid`` is a reversed millisecond timestamp plus randomness, so the bucket's name order is
newest first: the files list pages straight through GCS's own listing. The public id is
``file-`` + base64url(uid) (``gateway.ids``); it decodes to exactly one object.

Conversion happens at upload, in the same single pass that checks every line: the
upload is read once, a bad line is reported (with its number) before anything becomes
visible, and creating a job is then a metadata lookup rather than a rewrite of a file
that may be gigabytes long inside a create request. The cost is storing OpenAI-format
files twice. An upload is committed by a last metadata write on the original (its
``format``); until then it is not listed, so an interrupted upload is never offered.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import TYPE_CHECKING

from gateway.ids import decode_id, encode_id
from gateway.jsonl import checked
from gateway.models import FileObject
from gateway.provider import FileUpload
from gateway.stores import cleanup_shielded
from gateway_vertex import wire
from gateway_vertex.formats import Kind, LineConverter

if TYPE_CHECKING:  # gcs imports gcloud-aio-storage: loaded with the first storage call
    from gateway_vertex.gcs import Gcs

log = logging.getLogger("finetune_gateway.vertex")

FILE_PREFIX = "file-"
ROLE = "finetune-gateway-role"
FORMAT = "finetune-gateway-format"
KINDS: frozenset[str] = frozenset(
    {"openai-chat", "openai-preference", "gemini", "gemini-preference"}
)
_MAX_MS = 10**13 - 1
_UID = re.compile(r"\d{13}-[0-9a-f]{8}")


class Layout:
    """Object names and public ids for one bucket and prefix."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.originals = f"{prefix}files/"
        self._uri_prefix = f"gs://{bucket}/{prefix}"

    @staticmethod
    def new_uid(now: float) -> str:
        return f"{_MAX_MS - int(now * 1000):013d}-{secrets.token_hex(4)}"

    def original(self, uid: str) -> str:
        return f"{self.originals}{uid}.jsonl"

    def converted(self, uid: str) -> str:
        return f"{self.prefix}vertex/{uid}.jsonl"

    def file_id(self, uid: str) -> str:
        return encode_id(FILE_PREFIX, uid)

    def uid_of(self, file_id: str) -> str:
        return decode_id(FILE_PREFIX, file_id, what="file", shape=_UID)

    def uid_of_name(self, name: str) -> str | None:
        for folder in ("files/", "vertex/"):
            head = self.prefix + folder
            if name.startswith(head) and name.endswith(".jsonl"):
                uid = name[len(head) : -len(".jsonl")]
                if _UID.fullmatch(uid):
                    return uid
        return None

    def file_id_of_uri(self, uri: str) -> str:
        """A dataset URI in a job: the file id if the gateway staged it, else the URI."""
        if uri.startswith(self._uri_prefix):
            uid = self.uid_of_name(uri[len(f"gs://{self.bucket}/") :])
            if uid is not None:
                return self.file_id(uid)
        return uri

    def file_object(self, found: wire.GcsObject) -> FileObject | None:
        """The public file for an original object; None for anything not a committed upload."""
        meta = found.metadata or {}
        uid = self.uid_of_name(found.name)
        if uid is None or meta.get(ROLE) != "original" or meta.get(FORMAT) not in KINDS:
            return None
        created = meta.get("created_at", "")
        return FileObject(
            id=self.file_id(uid),
            bytes=int(found.size),
            created_at=int(created) if created.isdigit() else 0,
            filename=meta.get("filename", f"{uid}.jsonl"),
            purpose=meta.get("purpose", "fine-tune"),
            status="processed",
        )


def format_of(found: wire.GcsObject) -> Kind | None:
    kind = (found.metadata or {}).get(FORMAT)
    return kind if kind in KINDS else None  # type: ignore[return-value]  # checked


async def stage(gcs: Gcs, layout: Layout, upload: FileUpload) -> FileObject:
    """Check, convert and store an upload; nothing is left behind if any of it fails."""
    now = time.time()
    uid = layout.new_uid(now)
    meta = {
        ROLE: "original",
        "filename": upload.filename,
        "purpose": upload.purpose,
        "created_at": str(int(now)),
    }
    original = gcs.resumable(layout.original(uid), meta)
    converted = gcs.resumable(
        layout.converted(uid), {ROLE: "converted", "source": layout.original(uid)}
    )
    converter = LineConverter()
    try:
        lines = checked(upload.chunks, converter, param="file", what="training file")
        async for chunk in lines:
            await original.write(chunk)
            if out := converter.take():
                await converted.write(out)
        # The last line is checked after the last chunk arrived.
        if out := converter.take():
            await converted.write(out)
        if converted.size:  # Gemini's own format needs no copy: nothing to make
            await converted.finish()
        await original.finish()
        assert converter.kind is not None  # checked() refuses a file without lines
        committed = await gcs.patch_metadata(original.name, {**meta, FORMAT: converter.kind})
    except BaseException:
        # Shielded: a cancelled request must still clean up after itself.
        for made in (original, converted):
            await cleanup_shielded(f"Cloud Storage ({made.name})", made.abort())
        raise
    found = layout.file_object(committed)
    assert found is not None  # just committed with every field file_object reads
    return found
