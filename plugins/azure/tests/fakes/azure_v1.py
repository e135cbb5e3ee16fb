"""A stand-in for Azure OpenAI's v1 API (``/openai/v1/...``): OpenAI's schema behind Azure's door.

Azure's v1 API is OpenAI's files and fine-tuning API as it is, so the service behind
the door is the project's spec-true OpenAI fake (``tests.fakes.openai_upstream``),
mounted under ``/openai``. What is Azure's own is the door, done here: it takes an
``api-key`` header or an ``Authorization: Bearer`` Entra ID token (or key), answers
auth failures in Microsoft's envelope with the status as the code, and refuses any
``api-version`` but ``preview``/``latest`` (v1 proper takes none). Every request is
recorded here as it arrived, before the door hands it on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from plugins.azure.tests.fakes.azure_dated import Recorded
from plugins.azure.tests.fakes.azure_dated_rules import (
    INVALID_KEY,
    INVALID_TOKEN,
    MISSING_KEY,
    AzureError,
)
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_openai_app

V1_API_VERSIONS = ("preview", "latest")


class FakeAzureV1State:
    """The door's credentials and record, and the OpenAI fake behind it (``service``)."""

    def __init__(self, api_keys: Iterable[str] = (), ad_tokens: Iterable[str] = ()) -> None:
        self.api_keys = set(api_keys)
        self.ad_tokens = set(ad_tokens)
        # The service trusts the door: it accepts, as a bearer, whatever the door let in.
        self.service = FakeOpenAIState(api_keys=self.api_keys | self.ad_tokens)
        self.requests: list[Recorded] = []


STATE = web.AppKey("fake_azure_v1_state", FakeAzureV1State)


def _credential(state: FakeAzureV1State, request: web.Request) -> str:
    if (key := request.headers.get("api-key")) is not None:
        if key not in state.api_keys:
            raise AzureError(401, "401", INVALID_KEY)
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        if token.strip() not in state.ad_tokens | state.api_keys:
            raise AzureError(401, "401", INVALID_TOKEN)
        return token.strip()
    raise AzureError(401, "401", MISSING_KEY)


@web.middleware
async def _door(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    state.requests.append(
        Recorded(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
        )
    )
    try:
        credential = _credential(state, request)
        version = request.query.get("api-version")
        if version is not None and version not in V1_API_VERSIONS:
            raise AzureError(400, "BadRequest", "API version not supported")
    except AzureError as exc:
        return exc.response()
    headers = {k: v for k, v in request.headers.items() if k.lower() != "api-key"}
    headers["Authorization"] = f"Bearer {credential}"
    return await handler(request.clone(headers=headers))


def make_app(state: FakeAzureV1State) -> web.Application:
    app = web.Application(middlewares=[_door])
    app[STATE] = state
    app.add_subapp("/openai", make_openai_app(state.service))
    return app
