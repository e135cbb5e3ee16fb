"""``GET /openapi.json``: the gateway's own OpenAPI document, true to its routes and models."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import msgspec
import openai
import pytest
import schemathesis

from gateway.app import make_app
from gateway.config import parse_config
from gateway.models import JobCreate
from gateway.openapi import document
from gateway.registry import Registry
from tests.conftest import Stack, base_config


def _documented() -> dict[str, Any]:
    return dict(json.loads(document()))


def test_openapi_lists_every_route_the_app_serves_and_no_other(registry: Registry) -> None:
    app = make_app(parse_config(base_config("http://127.0.0.1:9/v1"), registry, {}), registry)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"  # aiohttp adds one per GET
        # The dashboard (gateway.ui): a page and the JSON it alone reads, not the API.
        and not route.resource.canonical.startswith("/ui")
    }
    documented = {
        (method.upper(), path) for path, item in _documented()["paths"].items() for method in item
    }
    assert served == documented
    assert len(documented) == 24  # 16, and the webhook endpoints API's 8


def test_openapi_is_a_valid_openapi_3_1_document() -> None:
    doc = _documented()
    assert doc["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI 3.1 meta-schema


def test_openapi_every_v1_operation_documents_auth_routing_headers_and_error_envelope() -> None:
    doc = _documented()
    envelope = doc["components"]["schemas"]["ErrorBody"]
    assert sorted(envelope["required"]) == ["code", "message", "param", "type"]
    assert doc["components"]["securitySchemes"]["gatewayKey"] == {
        "type": "http",
        "scheme": "bearer",
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not path.startswith("/v1/"):
                assert op["security"] == [], (method, path)  # served without a gateway key
                continue
            assert "security" not in op, (method, path)  # the document's: a gateway key
            error = {"$ref": "#/components/responses/Error"}
            assert op["responses"]["4XX"] == error and op["responses"]["5XX"] == error
            params = {p["$ref"].rsplit("/", 1)[1] for p in op["parameters"]}
            routing = {"x-portkey-virtual-key", "x-portkey-config", "x-portkey-provider"}
            if path.startswith(("/v1/webhook_endpoints", "/v1/webhook_event_types")):
                assert not routing & params, (method, path)  # the gateway's own, not routed
            else:
                assert routing <= params, (method, path)
            for name in re.findall(r"{(\w+)}", path):
                assert name in params, (method, path, name)


def test_openapi_request_schemas_come_from_the_models() -> None:
    """The create body's schema is msgspec's for JobCreate, so a new field or limit in the
    model is in the document without anyone editing it."""
    _, components = msgspec.json.schema_components(
        [JobCreate], ref_template="#/components/schemas/{name}"
    )
    doc = _documented()
    assert doc["components"]["schemas"]["JobCreate"] == components["JobCreate"]
    create = doc["paths"]["/v1/fine_tuning/jobs"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobCreate"}
    assert components["JobCreate"]["properties"]["suffix"]["anyOf"][0]["maxLength"] == 64


def test_openapi_is_served_without_a_gateway_key_while_v1_still_needs_one(stack: Stack) -> None:
    root = stack.gateway_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/openapi.json", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.read() == document()
    with pytest.raises(openai.AuthenticationError):
        stack.client(api_key="not-a-gateway-key").fine_tuning.jobs.list()
