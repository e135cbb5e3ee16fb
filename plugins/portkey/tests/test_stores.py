"""Managed mode's stores as the Store protocol: keys, round trips, errors, open_store.

What every store kind promises of its bytes (whole objects or none, whatever cuts a
write short; streamed reads; bounded memory) is checked once per kind on the core's
writers, in tests/stores/test_promises.py. Here: what the stores add on top, against
the local directory, S3 (moto) and GCS (fake-gcs-server). Writes of 20 MB take S3's
multipart path and several GCS chunks; smaller ones S3Store's single PutObject.
"""

from __future__ import annotations

import json
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import egress
from gateway.errors import InternalError, NotFound, UpstreamError
from gateway_portkey.settings import ManagedSettings
from gateway_portkey.store import LocalStore, Store, open_store
from gateway_portkey.store_gcs import GcsStore
from gateway_portkey.store_s3 import S3Store
from plugins.portkey.tests.conftest import (
    AWS_SECRET_KEY,
    gcs_leftovers,
    local_leftovers,
    s3_leftovers,
)

MB = 1_000_000
MiB = 1024 * 1024
CHUNK = 1_000_003  # odd, so chunks straddle every part and chunk boundary


@pytest.fixture(autouse=True)
def loopback_stores_allowed() -> Iterator[None]:
    """The stores here are used without an app, so without a config's egress policy: the
    one a config naming these loopback stand-ins would install (fails closed otherwise)."""
    before = egress.install(egress.policy(allow_networks=["127.0.0.0/8"]))
    yield
    egress.install(before)


def data_of(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


async def chunks_of(data: bytes, size: int = CHUNK) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: Store, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key)])


@dataclass
class Case:
    store: Store
    leftovers: Callable[[], list[str]]  # every object, open upload or partial file left


@pytest.fixture(params=["local", "s3", "gcs"])
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    if request.param == "local":
        root = tmp_path / "files"
        settings = ManagedSettings(store=str(root))
        leftovers = lambda: local_leftovers(root)  # noqa: E731
    elif request.param == "s3":
        settings = request.getfixturevalue("s3_settings")
        moto_url = request.getfixturevalue("moto_url")
        leftovers = lambda: s3_leftovers(moto_url, settings.store_location())  # noqa: E731
    else:
        settings = request.getfixturevalue("gcs_settings")
        gcs_url = request.getfixturevalue("gcs_url")
        leftovers = lambda: gcs_leftovers(gcs_url, settings.store_location())  # noqa: E731
    store = open_store(settings)
    yield Case(store, leftovers)
    await store.close()


# ---- every store ---------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1000, 8 * MiB, 20 * MB])
async def test_store_round_trips_bytes_exactly(case: Case, size: int) -> None:
    data = data_of(size)

    written = await case.store.write("file-a", chunks_of(data))

    assert written == size
    assert await read_all(case.store, "file-a") == data
    await case.store.delete("file-a")
    assert case.leftovers() == []


async def test_store_read_of_a_missing_key_is_not_found(case: Case) -> None:
    with pytest.raises(NotFound, match="file-missing"):
        await anext(case.store.read("file-missing"))


async def test_store_delete_of_a_missing_key_is_fine(case: Case) -> None:
    await case.store.delete("file-missing")


async def test_store_refuses_a_key_that_is_a_path(case: Case) -> None:
    with pytest.raises(ValueError, match="not a store key"):
        await case.store.write("../etc/passwd", chunks_of(b"x"))
    assert case.leftovers() == []


# ---- S3 ------------------------------------------------------------------------------
async def test_s3_store_missing_bucket_is_an_upstream_error(s3_settings: ManagedSettings) -> None:
    store = S3Store(msgspec.structs.replace(s3_settings, store="s3://no-such-bucket/x/"))
    try:
        with pytest.raises(UpstreamError) as written:
            await store.write("file-a", chunks_of(b"x"))
        with pytest.raises(UpstreamError) as read:  # not the file's 404: the store is broken
            await anext(store.read("file-a"))
    finally:
        await store.close()

    for caught in (written, read):
        assert "NoSuchBucket" in caught.value.message
        assert AWS_SECRET_KEY not in caught.value.message


# ---- GCS -----------------------------------------------------------------------------
async def test_gcs_store_unreachable_is_an_upstream_error(
    gcs_settings: ManagedSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"127.0.0.1:{closed.getsockname()[1]}")
        store = GcsStore(gcs_settings)
        try:
            with pytest.raises(UpstreamError) as caught:
                await anext(store.read("file-a"))
        finally:
            await store.close()

    assert caught.value.code == "upstream_unreachable"


async def test_gcs_store_refused_key_is_an_upstream_error_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)  # real GCS: a token first

    async def token(request: web.Request) -> web.Response:
        body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_post("/token", token)
    server = TestServer(app)
    await server.start_server()
    key = service_account_key(str(server.make_url("/token")))
    store = GcsStore(ManagedSettings(store="gs://bucket/", store_service_account_json=key))
    try:
        with pytest.raises(UpstreamError) as caught:
            await anext(store.read("file-a"))
    finally:
        await store.close()
        await server.close()

    assert caught.value.code == "upstream_auth_failed"  # the gateway's key: not the caller's 401
    assert "400" in caught.value.message
    info = json.loads(key)
    assert info["private_key_id"] not in caught.value.message
    assert "PRIVATE KEY" not in caught.value.message


async def test_gcs_store_unreadable_key_file_is_misconfigured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    missing = str(tmp_path / "no-such-key.json")
    store = GcsStore(ManagedSettings(store="gs://bucket/", store_service_account_json=missing))
    try:
        with pytest.raises(InternalError) as caught:
            await store.write("file-a", chunks_of(b"x"))
    finally:
        await store.close()

    assert caught.value.code == "store_misconfigured"


def service_account_key(token_uri: str) -> str:
    """A service account key file's JSON, with a fresh RSA key, for ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "ftgw-proj",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "store@ftgw-proj.iam.gserviceaccount.com",
        "token_uri": token_uri,
    }
    return json.dumps(info)


# ---- open_store ----------------------------------------------------------------------
async def test_open_store_picks_the_store_by_its_location(tmp_path: Path) -> None:
    stores = [
        open_store(ManagedSettings(store="s3://bucket/some/prefix")),
        open_store(ManagedSettings(store="gs://bucket")),
        open_store(ManagedSettings(data_dir=str(tmp_path))),
    ]

    assert [type(s) for s in stores] == [S3Store, GcsStore, LocalStore]
    s3, gcs, local = stores
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix/")
    assert isinstance(gcs, GcsStore) and (gcs.bucket, gcs.prefix) == ("bucket", "")
    assert isinstance(local, LocalStore) and local.root == tmp_path / "files"
    for store in stores:
        await store.close()


def test_open_store_names_the_extra_a_cloud_store_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "gateway_portkey.store_s3")
    for name in ("aiobotocore", "aiobotocore.config", "aiobotocore.session"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed

    with pytest.raises(InternalError, match=r"finetune-gateway-portkey\[s3\]"):
        open_store(ManagedSettings(store="s3://bucket/prefix/"))


def test_open_store_without_a_bucket_is_misconfigured() -> None:
    with pytest.raises(InternalError, match="names no bucket"):
        open_store(ManagedSettings(store="s3:///prefix/"))
