"""No secret in any log line, response body or response header, in any encoding.

Every log record of every logger is captured at DEBUG (a root handler, every existing
logger opened up to DEBUG) while realistic flows run through the official SDK against
the fakes: successes, upstream 401/403/500 (with upstreams that echo the key they were
given), bad input, credentials in headers for OpenAI, Azure, Bedrock and Vertex, an
inline config with an api_key, a refused custom host, a wrong gateway key, and managed
mode on PostgreSQL (a DSN with a password) and an S3 store. Then every formatted line
and every response is searched for each secret as it is, base64-encoded (at each of
the three alignments, standard and URL-safe), URL-quoted and JSON-escaped. The SDK's
own lines (openai, httpx, httpcore: the client's side) are held to it too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import openai
import pytest

import gateway_vertex.settings as vertex_settings
from gateway import log_redaction
from plugins.azure.tests.fakes.azure_dated import FakeAzureDatedState
from plugins.azure.tests.fakes.azure_dated import make_app as make_azure
from plugins.bedrock.tests.conftest import moto_url  # noqa: F401 - fixtures, shared
from plugins.portkey.tests.conftest import aws_env  # noqa: F401
from plugins.portkey.tests.test_managed_serve import postgres  # noqa: F401
from plugins.vertex.tests.conftest import rsa_key  # noqa: F401
from plugins.vertex.tests.fakes.vertex_upstream import FakeGoogleState
from plugins.vertex.tests.fakes.vertex_upstream import make_app as make_google
from tests.conftest import (
    GATEWAY_KEY,
    OTHER_GATEWAY_KEY,
    TRAINING_JSONL,
    UPSTREAM_KEY,
    Stack,
    base_config,
)

WRONG_GATEWAY_KEY = "gw-search-team-0123456788"  # one character off the real one
REVOKED_KEY = "sk-revoked-key-abcdef"  # base_config's openai-revoked
CALLER_OPENAI_KEY = "sk-caller-header-key-5f4e3d2c1b0a"
INLINE_OPENAI_KEY = "sk-inline-config-key-a1b2c3d4e5f6"
AZURE_KEY = "azkey-header-0123456789abcdef01234567"
AZURE_AD_TOKEN = "eyJhbGciOiJSUzI1NiJ9.header-entra-token-7a6b5c4d3e2f"
AWS_ACCESS_KEY_ID = "AKIAHEADERCREDS00001"  # an identifier, logged by AWS's own tools
AWS_SECRET_KEY = "aws-secret-in-header-Zm9vYmFyYmF6cXV4MTIz"
AWS_SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////session-token-in-header-0123456789+/="
DSN_PASSWORD = "dsn-password-9f8e7d6c5b4a"
STORE_SECRET_KEY = "managed-store-secret-s3-0a1b2c3d4e5f"
VERTEX_PROJECT = "ftgw-secrets"
VERTEX_EMAIL = "gateway@ftgw-secrets.iam.gserviceaccount.com"


def encodings(secret: str) -> set[str]:
    """``secret`` as it is and in the encodings a log or a response could carry it in."""
    raw = secret.encode()
    found = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            # Inside a longer encoded text, only the groups made of the secret's own bytes
            # are the same wherever it sits: drop the ones shared with its neighbours.
            encoded = encode(b"\0" * offset + raw).decode()
            start = 4 if offset else 0
            end = len(encoded) - (4 if (offset + len(raw)) % 3 else 0)
            found.add(encoded[start:end].rstrip("="))
    return {needle for needle in found if len(needle) >= 8}


class Capture(logging.Handler):
    """Every record, formatted as a log file would have it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(threadName)s %(message)s")
        )
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, self.format(record)))


@pytest.fixture
def capture() -> Iterator[Capture]:
    """A root handler at DEBUG, with every logger that exists opened up to DEBUG."""
    handler = Capture()
    root = logging.getLogger()
    saved = [(root, root.level, root.propagate, root.disabled)]
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            saved.append((logger, logger.level, logger.propagate, logger.disabled))
            logger.setLevel(logging.DEBUG)
            logger.propagate, logger.disabled = True, False
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    for logger, level, propagate, disabled in saved:
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


@dataclass
class Responses:
    """Every response the SDK clients received: status line, headers and body."""

    texts: list[str] = field(default_factory=list)

    def hook(self, response: httpx.Response) -> None:
        response.read()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.texts.append(f"{response.status_code}\n{headers}\n{response.text}")

    def client(
        self, base_url: str, api_key: str, headers: dict[str, str] | None = None
    ) -> openai.OpenAI:
        http = httpx.Client(event_hooks={"response": [self.hook]}, timeout=20)
        return openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            default_headers=headers,
            http_client=http,
        )


def expect(error: type[openai.APIStatusError], call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(error):
        call(*args, **kwargs)


def openai_flows(stack: Stack, seen: Responses) -> None:
    stack.upstream.api_keys.add(CALLER_OPENAI_KEY)
    gateway = stack.gateway_url
    client = seen.client(gateway, GATEWAY_KEY)
    uploaded = client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id)
    client.fine_tuning.jobs.retrieve(job.id)
    client.fine_tuning.jobs.list_events(job.id)
    client.files.content(uploaded.id).read()
    # Upstream refusals and failures, from upstreams that echo the key they were given.
    revoked = seen.client(gateway, GATEWAY_KEY, {"x-portkey-virtual-key": "openai-revoked"})
    expect(openai.InternalServerError, revoked.files.list)
    stack.upstream.fail_next(403, {"error": {"message": f"key {UPSTREAM_KEY} is read-only"}})
    expect(openai.InternalServerError, client.fine_tuning.jobs.cancel, job.id)
    stack.upstream.fail_next(500, f"crashed; Authorization: Bearer {UPSTREAM_KEY}".encode())
    expect(openai.InternalServerError, client.files.list)
    # Bad input.
    expect(openai.BadRequestError, client.fine_tuning.jobs.create, model="m", training_file="")
    expect(openai.BadRequestError, client.fine_tuning.jobs.list, limit=0)
    expect(openai.NotFoundError, client.fine_tuning.jobs.retrieve, "ftjob-nope")
    # The caller's own OpenAI key in Authorization, the gateway key in x-portkey-api-key.
    caller = seen.client(
        gateway,
        CALLER_OPENAI_KEY,
        {
            "x-portkey-api-key": OTHER_GATEWAY_KEY,
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": stack.upstream_url,
        },
    )
    caller.files.list()
    stack.upstream.fail_next(401, {"error": {"message": f"bad key {CALLER_OPENAI_KEY}"}})
    expect(openai.AuthenticationError, caller.files.list)
    stack.upstream.fail_next(403, {"error": {"message": f"{CALLER_OPENAI_KEY} may not"}})
    expect(openai.PermissionDeniedError, caller.fine_tuning.jobs.list)
    # An inline config with an api_key (unknown upstream: a 401 echoing part of it), and
    # with a custom host the allow-list refuses.
    inline = {"provider": "openai", "api_key": INLINE_OPENAI_KEY, "base_url": stack.upstream_url}
    with_inline = seen.client(gateway, OTHER_GATEWAY_KEY, {"x-portkey-config": json.dumps(inline)})
    expect(openai.AuthenticationError, with_inline.files.list)
    refused = {**inline, "custom_host": "http://0x7f000001:9/v1"}
    with_refused = seen.client(
        gateway, OTHER_GATEWAY_KEY, {"x-portkey-config": json.dumps(refused)}
    )
    expect(openai.BadRequestError, with_refused.files.list)
    # A wrong gateway key, in both places it may come.
    expect(openai.AuthenticationError, seen.client(gateway, WRONG_GATEWAY_KEY).files.list)
    wrong = seen.client(gateway, CALLER_OPENAI_KEY, {"x-portkey-api-key": WRONG_GATEWAY_KEY})
    expect(openai.AuthenticationError, wrong.files.list)


def azure_flows(stack: Stack, seen: Responses) -> None:
    azure = FakeAzureDatedState(api_keys={AZURE_KEY}, ad_tokens={AZURE_AD_TOKEN})
    azure_url = stack.servers.serve(make_azure(azure))
    # The SDK's api_key is the gateway key (so Authorization carries no provider key).
    headers = {
        "x-portkey-provider": "azure-openai",
        "x-portkey-azure-api-version": "2024-10-21",
        "x-portkey-custom-host": azure_url,
    }
    with_key = seen.client(stack.gateway_url, OTHER_GATEWAY_KEY, {**headers, "api-key": AZURE_KEY})
    with_key.fine_tuning.jobs.list()
    with_key.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    azure.fail_next(401, {"error": {"code": "401", "message": f"Bad key {AZURE_KEY}"}})
    expect(openai.AuthenticationError, with_key.fine_tuning.jobs.list)
    with_token = seen.client(
        stack.gateway_url,
        OTHER_GATEWAY_KEY,
        {**headers, "x-portkey-azure-ad-token": AZURE_AD_TOKEN},
    )
    with_token.fine_tuning.jobs.list()
    azure.fail_next(500, f"upstream crashed with token={AZURE_AD_TOKEN}".encode())
    expect(openai.InternalServerError, with_token.files.list)


def bedrock_flows(stack: Stack, seen: Responses, endpoint: str) -> None:
    headers = {
        "x-portkey-provider": "bedrock",
        "x-portkey-aws-access-key-id": AWS_ACCESS_KEY_ID,
        "x-portkey-aws-secret-access-key": AWS_SECRET_KEY,
        "x-portkey-aws-session-token": AWS_SESSION_TOKEN,
        "x-portkey-aws-region": "us-east-1",
        "x-portkey-custom-host": endpoint,
    }
    client = seen.client(stack.gateway_url, OTHER_GATEWAY_KEY, headers)
    client.fine_tuning.jobs.list()
    expect(openai.NotFoundError, client.fine_tuning.jobs.retrieve, "ftjob-bm9uZQ")
    expect(openai.BadRequestError, client.fine_tuning.jobs.create, model="m", training_file="x")


@dataclass
class VertexKey:
    info: dict[str, Any]
    public_pem: str

    @property
    def pieces(self) -> list[str]:
        """The private key's base64 lines: any one of them in a log is a leak."""
        lines = self.info["private_key"].strip().splitlines()
        return [line for line in lines if not line.startswith("-----")]


def vertex_key(private: str, public: str) -> VertexKey:
    info = {
        "type": "service_account",
        "project_id": VERTEX_PROJECT,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": private,
        "client_email": VERTEX_EMAIL,
        "client_id": "100000000000000000002",
    }
    return VertexKey(info, public)


def vertex_flows(
    stack: Stack, seen: Responses, key: VertexKey, monkeypatch: pytest.MonkeyPatch
) -> FakeGoogleState:
    google = FakeGoogleState(projects={VERTEX_PROJECT}, public_keys={VERTEX_EMAIL: key.public_pem})
    google_url = stack.servers.serve(make_google(google))
    key.info["token_uri"] = f"{google_url}/token"
    # The fake's token endpoint stands in for Google's, which is all a caller's key may name.
    allowed = vertex_settings.GOOGLE_TOKEN_URIS | {key.info["token_uri"]}
    monkeypatch.setattr(vertex_settings, "GOOGLE_TOKEN_URIS", allowed)
    headers = {
        "x-portkey-provider": "vertex-ai",
        "x-portkey-vertex-project-id": VERTEX_PROJECT,
        "x-portkey-vertex-region": "europe-west4",
        "x-portkey-vertex-service-account-json": json.dumps(key.info),
        "x-portkey-custom-host": google_url,
    }
    client = seen.client(stack.gateway_url, OTHER_GATEWAY_KEY, headers)
    client.fine_tuning.jobs.list()
    expect(openai.NotFoundError, client.fine_tuning.jobs.retrieve, "ftjob-bm9uZQ")
    google.fail_next(500, "INTERNAL", "backend error")
    expect(openai.InternalServerError, client.fine_tuning.jobs.list)
    google.revoked.add(VERTEX_EMAIL)
    # Other settings make another provider instance, which asks for a token of its own.
    elsewhere = {**headers, "x-portkey-vertex-region": "us-central1"}
    revoked = seen.client(stack.gateway_url, OTHER_GATEWAY_KEY, elsewhere)
    expect(openai.AuthenticationError, revoked.fine_tuning.jobs.list)
    return google


def managed_flows(stack: Stack, seen: Responses, s3_url: str, database: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="test-setup-only",
        aws_secret_access_key="test-setup-only",
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="ftgw-secrets")
    raw = base_config(stack.upstream_url)
    dsn = database.replace("postgres@", f"postgres:{DSN_PASSWORD}@")
    raw["providers"] = {
        "portkey": {
            "database": dsn,
            "store": "s3://ftgw-secrets/managed/",
            "store_endpoint_url": s3_url,
            "store_aws_region": "us-east-1",
            "store_aws_access_key_id": "AKIAMANAGEDSTORE0002",
            "store_aws_secret_access_key": STORE_SECRET_KEY,
        }
    }
    managed = seen.client(stack.start_gateway(raw), GATEWAY_KEY, {"x-portkey-provider": "portkey"})
    uploaded = managed.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    managed.files.list()
    managed.files.content(uploaded.id).read()
    expect(openai.BadRequestError, managed.fine_tuning.jobs.create, model="m", training_file="x")
    # The same DSN, with nothing listening on its port: the error must not show it.
    raw["providers"]["portkey"]["database"] = dsn.replace(":5432/", ":1/")
    down = seen.client(stack.start_gateway(raw), GATEWAY_KEY, {"x-portkey-provider": "portkey"})
    expect(openai.InternalServerError, down.files.list)


def test_no_secret_in_any_log_line_response_or_header(
    stack: Stack,
    capture: Capture,
    moto_url: str,  # noqa: F811 - the fixture's value
    aws_env: None,  # noqa: F811 - nothing falls back to the machine's AWS settings, or IMDS
    postgres: str,  # noqa: F811
    rsa_key: tuple[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = Responses()
    key = vertex_key(*rsa_key)
    openai_flows(stack, seen)
    azure_flows(stack, seen)
    bedrock_flows(stack, seen, moto_url)
    google = vertex_flows(stack, seen, key, monkeypatch)
    managed_flows(stack, seen, moto_url, postgres)
    # /metrics after all of it: its labels are route templates and slugs, never values.
    with httpx.Client(event_hooks={"response": [seen.hook]}, timeout=20) as http:
        scrape = http.get(stack.gateway_url.removesuffix("/v1") + "/metrics")
    assert scrape.status_code == 200 and "finetune_gateway_requests_total" in scrape.text

    secrets = {
        "gateway key": GATEWAY_KEY,
        "other gateway key": OTHER_GATEWAY_KEY,
        "wrong gateway key": WRONG_GATEWAY_KEY,
        "upstream key": UPSTREAM_KEY,
        "revoked upstream key": REVOKED_KEY,
        "caller's OpenAI key": CALLER_OPENAI_KEY,
        "inline config api_key": INLINE_OPENAI_KEY,
        "Azure api-key": AZURE_KEY,
        "Azure AD token": AZURE_AD_TOKEN,
        "AWS secret key": AWS_SECRET_KEY,
        "AWS session token": AWS_SESSION_TOKEN,
        "DSN password": DSN_PASSWORD,
        "S3 store secret key": STORE_SECRET_KEY,
    }
    secrets |= {f"Vertex private key line {i}": p for i, p in enumerate(key.pieces)}
    secrets |= {f"Vertex access token {i}": t for i, t in enumerate(google.tokens)}
    # Each secret was really used, so there was something to leak.
    assert google.tokens and len(key.pieces) > 20
    assert UPSTREAM_KEY in stack.upstream.api_keys

    lines = [line for _, line in capture.lines]
    access = [line for line in lines if " finetune_gateway.access " in line]
    assert len(access) == len(seen.texts) >= 30, "each request went through a gateway, logged"
    assert any(" botocore.auth " in line for line in lines), "DEBUG reached AWS's client"
    needles = {name: encodings(secret) for name, secret in secrets.items()}
    leaks = [
        f"{name} in {where}: {text[:2000]!r}"
        for where, texts in (("a log line", lines), ("a response", seen.texts))
        for text in texts
        for name, found in needles.items()
        if any(needle in text for needle in found)
    ]
    assert not leaks, "\n".join(leaks)
    print(  # the figures for the record (pytest -s shows them)
        f"\nsecrets searched: {len(secrets)} ({len(key.pieces)} private-key lines, "
        f"{len(google.tokens)} access tokens; {sum(map(len, needles.values()))} encodings); "
        f"log lines scanned: {len(lines)}; responses scanned: {len(seen.texts)}"
    )


def test_encodings_find_a_secret_inside_encoded_text() -> None:
    """The search itself: a secret base64-encoded at any offset, or quoted, is found."""
    secret = "s3cr3t-value-0123456789"
    for prefix in ("", "a", "ab", "abc"):
        text = base64.b64encode(f"{prefix}user:{secret}".encode()).decode()
        assert any(needle in text for needle in encodings(secret)), prefix
        url_safe = base64.urlsafe_b64encode(f"{prefix}{secret}!".encode()).decode()
        assert any(needle in url_safe for needle in encodings(secret)), prefix
    assert any(n in f"dsn=x%3A{urllib.parse.quote(secret)}" for n in encodings(secret))
    assert not any(needle in "s3cr3t-value-012345678" for needle in encodings(secret))


@pytest.mark.parametrize(
    "line",
    [
        "CanonicalRequest:\nGET\n/\nhost:h\nx-amz-security-token:{s}\n\nhost;x-amz-security-token",
        "Sending http request: <AWSPreparedRequest headers={{'X-Amz-Security-Token': b'{s}'}}>",
        "Response headers: {{'Authorization': 'Bearer {s}', 'x-amzn-requestid': 'r1'}}",
        "Response body:\nb'<Credentials><SessionToken>{s}</SessionToken></Credentials>'",
        "Response body:\nb'<SecretAccessKey>{s}</SecretAccessKey>'",
        'Response body:\nb\'{{"access_token": "{s}", "expires_in": 3599}}\'',
    ],
)
def test_mask_credentials_masks_what_botocore_writes_at_debug(line: str) -> None:
    """The filter on botocore's loggers: headers, canonical requests, response bodies."""
    secret = "FwoGZXIvYXdzEJr//session+token/="
    logger = logging.getLogger("botocore.parsers")
    log_redaction.install()
    text = line.format(s=secret)
    record = logger.makeRecord(logger.name, logging.DEBUG, __file__, 1, "%s", (text,), None)
    assert all(f.filter(record) for f in logger.filters)
    assert secret not in record.getMessage()
    assert "***" in record.getMessage()
