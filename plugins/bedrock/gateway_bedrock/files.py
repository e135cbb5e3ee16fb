"""The gateway's files in S3: upload, list, read, delete, and staged conversions.

Uploads are checked line by line as they stream into S3 (``gateway.jsonl.checked``): a
file Bedrock could never train on is refused at upload, with its line numbers, and
nothing of it is kept. Conversions for a base model's line format are written once per
format next to the original and reused: the conversation format's in the upload's own
pass (``staging``), the others at job create (``staged``), as is any missing one (a file
uploaded before, or whose copy failed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from gateway import jsonl
from gateway.errors import BadRequest, NotFound
from gateway.models import FileDeleted, FileObject, Page
from gateway.paging import page_of
from gateway.provider import Download, FileUpload, PageQuery
from gateway_bedrock import s3, staging
from gateway_bedrock.aws import BedrockSettings, Clients
from gateway_bedrock.formats import LineFormat, convert_line


class FileStore:
    def __init__(
        self,
        settings: BedrockSettings,
        clients: Clients,
        errors: Callable[[str], AbstractContextManager[None]],
    ) -> None:
        self.settings = settings
        self._clients = clients
        self._errors = errors

    def layout(self) -> s3.Layout:
        bucket = self.settings.aws_s3_bucket
        if not bucket:
            raise BadRequest(
                "Bedrock keeps training files in S3, and no bucket is set: send "
                "'x-portkey-aws-s3-bucket' or set aws_s3_bucket in the virtual key",
                param="x-portkey-aws-s3-bucket",
                code="missing_s3_bucket",
            )
        prefix = self.settings.aws_s3_prefix
        return s3.Layout(bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/")

    def source_of(self, uri: str) -> str | None:
        return self.layout().source_of(uri) if self.settings.aws_s3_bucket else None

    async def upload(self, upload: FileUpload) -> FileObject:
        upload.require_fine_tuning_only("bedrock")
        layout = self.layout()
        client = await self._clients.s3()
        stem = s3.new_stem()
        key = layout.file_key(stem, upload.filename)
        created_at = s3.created_at_of(stem)
        copy = staging.ConversationCopy()
        checked = jsonl.checked(upload.chunks, copy, param="file")
        with self._errors("S3"):
            size = await staging.write_both(
                client,
                layout.bucket,
                key,
                layout.staged_key(stem, staging.STAGED_AT_UPLOAD),
                checked,
                copy,
                metadata=s3.file_metadata(upload.filename, upload.purpose, created_at),
            )
        return _file_object(s3.StoredFile(key, stem, s3.safe_filename(upload.filename), size))

    async def list(self, query: PageQuery) -> Page[FileObject]:
        if query.purpose not in (None, "fine-tune"):
            return Page(data=[], has_more=False)
        layout = self.layout()
        client = await self._clients.s3()
        files: list[FileObject] = []
        with self._errors("S3"):
            async for key, size in s3.list_keys(client, layout.bucket, layout.files_prefix):
                stored = s3.stored_file(key, size, layout)
                if stored is not None:
                    files.append(_file_object(stored))
        if query.order != "asc":  # keys sort oldest first; OpenAI lists newest first
            files.reverse()
        chosen, has_more = page_of(files, query, lambda item: item.id)
        return Page(data=chosen, has_more=has_more)

    async def retrieve(self, file_id: str) -> FileObject:
        return _file_object(await self.find(file_id))

    async def content(self, file_id: str) -> Download:
        stored = await self.find(file_id)
        client = await self._clients.s3()
        with self._errors("S3"):
            answer = await client.get_object(Bucket=self.layout().bucket, Key=stored.key)
        body = answer["Body"]

        async def release() -> None:
            body.close()

        return Download(
            chunks=s3.read_chunks(body),
            size=int(answer["ContentLength"]),
            content_type="application/jsonl",
            release=release,
        )

    async def delete(self, file_id: str) -> FileDeleted:
        stored = await self.find(file_id)
        layout = self.layout()
        client = await self._clients.s3()
        with self._errors("S3"):
            # Its conversions go too: they are copies of the user's data.
            staged = [
                key
                async for key, _ in s3.list_keys(
                    client, layout.bucket, layout.staged_prefix(stored.stem)
                )
            ]
            await s3.delete_keys(client, layout.bucket, [stored.key, *staged])
        return FileDeleted(id=file_id, deleted=True)

    async def find(self, file_id: str) -> s3.StoredFile:
        stem = s3.stem_of(file_id)
        layout = self.layout()
        client = await self._clients.s3()
        with self._errors("S3"):
            answer = await client.list_objects_v2(
                Bucket=layout.bucket, Prefix=f"{layout.files_prefix}{stem}/", MaxKeys=1
            )
        for item in answer.get("Contents", []):
            stored = s3.stored_file(item["Key"], int(item["Size"]), layout)
            if stored is not None:
                return stored
        raise NotFound(f"No file found with id '{file_id}'")

    async def staged(self, ref: str, line_format: LineFormat, model: str, param: str) -> str:
        """The s3:// URI of ``ref``'s training data in ``line_format``, converting it once."""
        layout = self.layout()
        client = await self._clients.s3()
        if ref.startswith("s3://"):
            location = s3.parse_s3_uri(ref)
            if location is None:
                raise BadRequest(f"'{ref}' is not an s3://bucket/key URI", param=param)
            bucket, key = location
            head = await self._source_head(client, bucket, key, ref, param)
            source = s3.staged_source_for_uri(ref, head["ETag"])
        else:
            try:
                stored = await self.find(ref)
            except NotFound as exc:
                raise BadRequest(exc.message, param=param, code="invalid_training_file") from None
            bucket, key, source = layout.bucket, stored.key, stored.stem
        staged = layout.staged_key(source, line_format)
        with self._errors("S3"):
            if await s3.exists(client, layout.bucket, staged):
                return layout.uri(staged)
            answer = await client.get_object(Bucket=bucket, Key=key)
            convert = functools.partial(convert_line, target=line_format, model=model)
            what = param.replace("_", " ")
            source_chunks = s3.read_chunks(answer["Body"])
            try:
                lines = jsonl.converted(source_chunks, convert, param=param, what=what)
                await s3.write_multipart(client, layout.bucket, staged, lines)
            finally:
                await s3.aclose(source_chunks)
                # Closing a generator never started skips its own cleanup: release the
                # source's connection here too (closing twice is harmless).
                answer["Body"].close()
        return layout.uri(staged)

    async def _source_head(self, client: Any, bucket: str, key: str, ref: str, param: str) -> Any:
        try:
            with self._errors("S3"):
                return await client.head_object(Bucket=bucket, Key=key)
        except NotFound:
            raise BadRequest(
                f"No object at {ref}", param=param, code="invalid_training_file"
            ) from None


def _file_object(stored: s3.StoredFile) -> FileObject:
    return FileObject(
        id=s3.file_id(stored.stem),
        bytes=stored.size,
        created_at=s3.created_at_of(stored.stem),
        filename=stored.filename,
        purpose="fine-tune",
        status="processed",
    )
