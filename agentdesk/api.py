"""The JSON API's shell: bearer-token authentication, one error body, the OpenAPI schema.

The endpoints live with their apps as django-ninja routers (runs/api.py, reviews/api.py);
``api_make`` mounts them on one NinjaAPI, which serves the OpenAPI 3 schema at
/api/schema and Swagger UI at /api/docs from the package's own static files (no CDN).
Both are public: they describe the shape of the API, which the source already shows,
and a client generator or a person reading the docs before they hold a token needs them.

What stays hand-written, and why:

- Bodies are parsed by ``json_object_parse``, not by ninja: ninja's 422 with pydantic's
  error list would change the API's 400s and their messages, and ``json_object_parse``
  refuses what PostgreSQL would refuse later (NUL, lone surrogates, deep nesting). The
  body's shape is declared for the schema (``body_documented``).
- Every refusal is ``api_error``'s body, ``{"error": {"message", "details"?}}``, including
  ninja's own (no usable token). Path parameters are Django's converters, so ninja's
  own validation of them (a 422) cannot refuse what the route matched.

Responses go through their declared schemas, so the schema cannot drift from what is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from ninja import NinjaAPI, Router, Schema, Swagger
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from agentdesk.models import ApiToken
from agentdesk.tokens import api_token_authenticate, api_token_used


class ErrorDetail(Schema):
    message: str
    # What exactly was refused, where there is more to say: the input schema's errors,
    # the request someone else decided first, a decision's field errors.
    details: Any = None


class ErrorOut(Schema):
    error: ErrorDetail


def api_error(status: int, message: str, details: Any = None) -> JsonResponse:
    body: dict[str, Any] = {"error": {"message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JsonResponse(body, status=status)


def refusals(*codes: int) -> dict[tuple[int, ...], type[Schema]]:
    """``response`` entries for the refusals an operation can answer, all ``ErrorOut``.

    401 is every operation's (no usable token); say the others, so the schema lists
    what can happen rather than every 4xx there is.
    """
    return {tuple(sorted({401, *codes})): ErrorOut}


def body_documented(schema: type[Schema]) -> dict[str, Any]:
    """``openapi_extra`` declaring the JSON body a view parses itself (see the module)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema.model_json_schema()}},
        }
    }


class BearerToken(HttpBearer):
    """``Authorization: Bearer adk_...``: an API token (agentdesk.tokens) of an active user."""

    def __call__(self, request: HttpRequest) -> ApiToken | None:
        # The header is read by api_token_authenticate, not ninja's parser: one reading of
        # it for the API and the tests of tokens.
        token = api_token_authenticate(request.headers.get("Authorization"))
        if token is not None:
            request.user = token.user
        return token

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        raise NotImplementedError  # __call__ reads the header itself


# A call refused for want of access (no such object to this user, or read only): it does
# not count as a use of the token, so ``last_used_at`` does not move for a probe.
_DENIED = (403, 404)


def _token_counted(run: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @wraps(run)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = run(request, *args, **kwargs)
        token = getattr(request, "auth", None)
        if isinstance(token, ApiToken) and response.status_code not in _DENIED:
            api_token_used(token=token)
        return response

    return wrapper


def _unauthenticated(request: HttpRequest, exc: object) -> JsonResponse:
    # Unknown, revoked and expired keys alike: the caller learns nothing about which.
    response = api_error(401, "a valid 'Authorization: Bearer <token>' header is required")
    response["WWW-Authenticate"] = "Bearer"
    return response


class _JsonApi(NinjaAPI):
    def get_content_type(self) -> str:
        # As JsonResponse sends, and every answer did before ninja: JSON defines no charset
        # parameter (RFC 8259), and an error body (api_error) and a success read alike.
        return "application/json"


def api_make(routers: Iterable[Router]) -> NinjaAPI:
    """The API with every app's router mounted at its root (the routes name their paths)."""
    api = _JsonApi(
        title="AgentDesk API",
        version="1",
        description="Submit runs and decide approval requests with a bearer token "
        "(make one on the Tokens page).",
        auth=BearerToken(),
        urls_namespace="api",
        openapi_url="/schema",
        docs_url="/docs",
        # Swagger UI would fetch a badge from its online validator; nothing leaves here.
        docs=Swagger(settings={"validatorUrl": None}),
    )
    api.add_exception_handler(AuthenticationError, _unauthenticated)
    api.add_decorator(_token_counted, mode="view")
    for router in routers:
        api.add_router("", router)
    return api
