"""Schemathesis against the gateway's own ``/openapi.json``, in front of the fake OpenAI.

Every operation the document lists is called with generated requests: ones that fit the
document (positive), ones that break it (negative), and, for operations on one job or
file, fitting ones aimed at a job and a file that exist. The answers must never be a
5xx, every error must be OpenAI's envelope, a 200 must match its documented schema,
data that breaks the document must be refused with a 4xx, a request without the gateway
key must get a 401, and the gateway must still answer ``/health`` at the end.

Bounded and repeatable: a fixed number of examples per operation and mode, derandomized
(the examples depend only on the document), no example database.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter
from typing import Any

import msgspec
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.feedback import NO_FEEDBACK
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.errors import ErrorEnvelope
from tests.conftest import GATEWAY_KEY, TRAINING_JSONL, Stack

# Per operation and mode; FUZZ_EXAMPLES=300 pytest tests/test_fuzz.py for a deeper run.
EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "25"))
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


def error_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx is OpenAI's envelope, with all four fields, typed."""
    if response.status_code < 400:
        return None
    try:
        msgspec.json.decode(response.content, type=ErrorEnvelope)
    except msgspec.MsgspecError as exc:
        raise AssertionError(
            f"{response.status_code} is not OpenAI's error envelope ({exc}): "
            f"{response.content[:300]!r}"
        ) from None
    return True


def negative_data_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis's negative_data_rejection, less one artifact of its own: a mutated
    value of the ``metadata[key]=value`` filter (null, a number, an object) reaches the
    wire as strings under bracketed keys, which is a filter that matches no job, so the
    200 with an empty list it gets is right."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    mutated = {getattr(data, "parameter", None)}
    mutated |= {m.parameter for m in getattr(data, "mutations", None) or ()}
    if "metadata" in mutated:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    error_envelope,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_refused,
    ignored_auth,
]


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    sent: Counter[str],
    http: requests.Session,
    path_parameters: dict[str, str] | None = None,
) -> None:
    # No feedback: the examples depend on the document alone, not on constants schemathesis
    # would gather from installed code or on what the server answered.
    strategy = operation.as_strategy(
        generation_mode=mode, path_parameters=path_parameters, feedback=NO_FEEDBACK
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=AUTH, session=http, timeout=10)
        sent[mode.value] += 1
        sent[f"{operation.label} {response.status_code // 100}xx"] += 1
        case.validate_response(response, checks=CHECKS, headers=AUTH)

    run()


def test_fuzz_openapi_operations_no_5xx_errors_enveloped_server_alive(stack: Stack) -> None:
    root = stack.gateway_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/openapi.json", timeout=5) as response:
        schema = schemathesis.openapi.from_dict(json.loads(response.read()))
    # A job and a file that exist, so the operations on one of them get past the 404.
    file_id = stack.upstream.add_file("train.jsonl", TRAINING_JSONL)["id"]
    job_id = stack.client().fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id
    known = {"file_id": file_id, "fine_tuning_job_id": job_id}

    sent: Counter[str] = Counter()
    failures: list[str] = []
    with requests.Session() as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            runs: list[tuple[GenerationMode, dict[str, str] | None]] = [
                (GenerationMode.POSITIVE, None)
            ]
            if operation.path.startswith("/v1/"):  # /health and itself take nothing to break
                runs.append((GenerationMode.NEGATIVE, None))
            if "{" in operation.path and operation.method != "delete":
                runs.append((GenerationMode.POSITIVE, known))
            for mode, params in runs:
                try:
                    _fuzz(operation, mode, root, sent, http, params)
                # Schemathesis raises a BaseExceptionGroup of its failures. Collect them all:
                # one bug must not hide another.
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
    total = sent["positive"] + sent["negative"]
    print(f"fuzzed requests: {total}", dict(sent))
    assert not failures, "\n\n".join(failures)
    with urllib.request.urlopen(f"{root}/health", timeout=5) as response:
        assert response.status == 200
    assert total >= 15 * EXAMPLES_PER_OPERATION
    # The schema checks saw answers that are not errors, on the job and the file too.
    for label in ("GET /v1/fine_tuning/jobs/{fine_tuning_job_id}", "GET /v1/files/{file_id}"):
        assert sent[f"{label} 2xx"] > 0, dict(sent)


def _form(field_name: str) -> tuple[bytes, str]:
    boundary = "fuzzfound"
    parts = [
        (f'Content-Disposition: form-data; name="{field_name}"', b"{}"),
        ('Content-Disposition: form-data; name="purpose"', b"fine-tune"),
        ('Content-Disposition: form-data; name="file"; filename="t.jsonl"', TRAINING_JSONL),
    ]
    body = b"".join(
        f"--{boundary}\r\n{header}\r\n\r\n".encode() + content + b"\r\n"
        for header, content in parts
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("method", "path", "form_field", "param", "code"),
    [
        # Each was a 500 or a 502 (the provider's multipart writer choked on the name).
        ("POST", "/files", "Cü", "file", "invalid_field_name"),
        ("POST", "/files", "C\x04", "file", "invalid_multipart"),
        # Each was a 200 that picked one reading of an ambiguous query.
        ("GET", "/files?limit=1&limit=2", None, "limit", "invalid_value"),
        ("GET", "/fine_tuning/jobs?after=a&after=b", None, "after", "invalid_value"),
        ("GET", "/files?limit=", None, "limit", None),
    ],
)  # fmt: skip
def test_fuzz_found_requests_are_refused_with_a_400_in_the_envelope(
    stack: Stack, method: str, path: str, form_field: str | None, param: str, code: str | None
) -> None:
    headers = dict(AUTH)
    body = None
    if form_field is not None:
        body, headers["Content-Type"] = _form(form_field)
    response = requests.request(
        method, stack.gateway_url + path, data=body, headers=headers, timeout=10
    )
    assert response.status_code == 400, response.text
    error = msgspec.json.decode(response.content, type=ErrorEnvelope).error
    assert error.param == param and (code is None or error.code == code), error
