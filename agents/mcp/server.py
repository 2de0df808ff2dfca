"""The MCP endpoint at /mcp: the official MCP SDK's streamable HTTP app, Gatehouse agent tokens as its bearer tokens,
the calling agent's own tools (listed by agents.mcp.tools, called by agents.mcp.calls), served beside Django by one
ASGI application (`with_mcp`).

How it is wired, and why:

- Stateless streamable HTTP. Every request is one self-contained POST that any web process can answer (no session
  lives in one process's memory), so gunicorn workers, several machines or a restart between two calls change
  nothing. Tools and resource templates are computed per request from the agent's grants, so a grant change shows on
  the next list; a list_changed notification would need a stream held open to one process and is not sent.
- The answer is one JSON body (the SDK's JSON mode) unless the call has something to say first (agents.mcp.streams):
  a call running long sends a log notice (agents.mcp.notices), wait_for_decision sends progress
  (agents.mcp.waiting), and those turn the call's own response into an event stream. setLevel has no session to
  set: a call's log level is its own.
- The agent's readable records are also resources, `gatehouse://crm/accounts/4471` (agents.mcp.resources), read
  through the same service as the read tool and the REST read.
- The SDK's bearer middleware calls `AgentTokenVerifier`, which asks `agent_authenticate` (the API's own check):
  unknown, expired or revoked tokens answer 401 with `WWW-Authenticate: Bearer error="invalid_token"`, on every
  request, so a token revoked mid-session stops the very next call. Gatehouse issues its tokens itself
  (`issue_token`); there is no OAuth authorization server to advertise, so no protected-resource metadata either.
- Host and Origin are checked here against Django's ALLOWED_HOSTS (and CSRF_TRUSTED_ORIGINS), with Django's own
  matcher, instead of by the SDK's DNS-rebinding guard: the SDK's guard is switched on by default only for
  127.0.0.1 and knows neither `.example.com` nor `*`, while one setting for the whole site is what an operator
  behind a proxy expects to configure (GATEHOUSE_ALLOWED_HOSTS).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import mcp_types as types
from django.conf import settings
from django.db import DatabaseError
from django.http.request import split_domain_port, validate_host
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from pydantic import AnyHttpUrl, PrivateAttr
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agents.mcp import calls, notices, resources, results, tools, waiting
from agents.mcp.streams import JsonUnlessNotified
from agents.mcp.work import in_thread, with_request_id
from audit.choices import Channel
from core.database import is_database_unavailable
from core.errors import GatehouseError, InvalidPayload, NotFound
from core.problems import database_unavailable_error
from core.request_context import new_request_id
from governance.models import Agent, AgentToken
from governance.services import agent_authenticate

logger = logging.getLogger(__name__)
# In stateless mode the SDK's transport logs "Terminating session: None" at INFO for every single request.
logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)

PATH = "/mcp"
# An auto-approved proposal executes on a worker moments after the commit: wait up to this long so the answer can
# say "executed" rather than "queued". Polled without holding a thread.
SETTLE_SECONDS = 3.0
SETTLE_POLL_SECONDS = 0.2
# JSON-RPC error code (server-defined range) for a refusal of a request that is not a tool call, e.g. tools/list by
# a disabled agent; `data` carries the contract's code. Tool calls are refused as tool results instead.
REFUSED = -32001
RESOURCE_NOT_FOUND = -32002  # the protocol's own code for a resource read of an unknown URI
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

INSTRUCTIONS = (
    "Gatehouse governs this agent's access to company systems. Read tools return only the fields the agent is "
    "granted. Propose tools submit a change: Gatehouse checks it, computes its impact itself and either executes it "
    "or routes it to a person for approval; the result says which (who decides and by when), and get_proposal "
    "tells where it stands later, or wait_for_decision waits for the person. Records the agent may read are also "
    "resources: gatehouse://{system}/{resource}/{record_id}, one template per granted resource. Refusals are tool "
    "errors with a stable code (scope_denied, agent_disabled, invalid_payload, system_frozen, …). Every call is "
    "audited."
)

T = TypeVar("T")
# Django's ASGIHandler: an ASGI app whose annotations (dict, Mapping) differ from Starlette's ASGIApp alias.
DjangoASGI = Any


# --- Authentication -------------------------------------------------------------------------------------------


class AgentAccessToken(AccessToken):
    """The SDK's access token, carrying the Agent that `agent_authenticate` found for this HTTP request."""

    _agent: Any = PrivateAttr(default=None)


# The caller's address for this request, set where the request enters (Router._mcp): the SDK's verifier is given the
# token alone, and a token limited to networks is judged by where the call comes from, as at the REST door.
_CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("gatehouse_mcp_client_address", default=None)


class AgentTokenVerifier:
    """The SDK's TokenVerifier over Gatehouse agent tokens (governance.services.agent_authenticate)."""

    async def verify_token(self, token: str) -> AccessToken | None:
        authenticate = functools.partial(agent_authenticate, source=_CLIENT_ADDRESS.get(), channel=Channel.MCP)
        found = await in_thread(authenticate, token)
        if found is None:
            return None
        agent, agent_token = found
        access = AgentAccessToken(
            token=f"{AgentToken.PREFIX}_{agent_token.prefix}",  # the lookup prefix, never the secret
            client_id=agent.slug,
            subject=agent.slug,  # sessions and request state bind to the agent, so a rotated token carries on
            scopes=[],
            expires_at=int(agent_token.expires_at.timestamp()) if agent_token.expires_at else None,
        )
        access._agent = agent
        return access


def _calling_agent() -> Agent:
    token = get_access_token()
    agent = getattr(token, "_agent", None)
    if not isinstance(agent, Agent):  # the bearer middleware lets no request through without one
        raise MCPError(REFUSED, "Refused (unauthenticated): a valid bearer token is required.")
    return agent


def _request_id(ctx: ServerRequestContext[Any, Any]) -> str:
    headers = getattr(ctx.request, "headers", None)
    return new_request_id(headers.get("x-request-id") if headers is not None else None)


# --- Handlers -------------------------------------------------------------------------------------------------


async def list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    agent = _calling_agent()
    listed = await _refusing(ctx, lambda request_id: in_thread(with_request_id(request_id, tools.list_tools), agent))
    return types.ListToolsResult(tools=listed)


async def _refusing(ctx: ServerRequestContext[Any, Any], work: Callable[[str], Awaitable[T]], **data: Any) -> T:
    """`work`'s answer, or its refusal as a JSON-RPC error whose `data` carries the contract's code (a request that is
    not a tool call has no tool result to be refused in). A fault is an internal error, never an HTTP 500."""
    request_id = _request_id(ctx)
    try:
        try:
            return await work(request_id)
        except DatabaseError as exc:
            if not is_database_unavailable(exc):
                raise
            raise database_unavailable_error() from exc  # the API's 503 database_unavailable
    except GatehouseError as exc:
        code = {NotFound.code: RESOURCE_NOT_FOUND, InvalidPayload.code: INVALID_PARAMS}.get(exc.code, REFUSED)
        refused = {"code": exc.code, "status": exc.status, "request_id": request_id, **data}
        if exc.errors:
            refused["errors"] = exc.errors
        raise MCPError(code, f"Refused ({exc.code}): {exc.detail}", data=refused) from None
    except Exception:
        raise _fault(ctx.method, request_id) from None


def _fault(what: str, request_id: str) -> MCPError:
    """A fault, not a refusal: said as a protocol error the client can report, never as an HTTP 500. Whatever was
    committed stays consistent (every service is atomic); get_proposal tells where a proposal stands."""
    logger.exception("mcp: %s failed (request %s)", what, request_id)
    return MCPError(INTERNAL_ERROR, f"Gatehouse could not complete the call (request id {request_id}).")


async def call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams) -> types.CallToolResult:
    agent = _calling_agent()
    request_id = _request_id(ctx)

    async def work() -> results.ToolResult:
        result = await in_thread(with_request_id(request_id, calls.call_tool), agent, params.name, params.arguments)
        if result.settle is not None:
            result = await _settle(agent, result, request_id)
        return result

    try:
        result = await notices.noticed(ctx, params.name, work, request_id=request_id)
        if result.wait is not None:
            result = await waiting.wait_for_decision(
                ctx, result, token=_bearer(ctx), source=_source(ctx), request_id=request_id
            )
    except Exception:
        raise _fault(params.name, request_id) from None
    return types.CallToolResult(
        content=[
            types.TextContent(text=result.message),
            types.TextContent(text=json.dumps(result.structured, ensure_ascii=False)),
        ],
        structured_content=result.structured,
        is_error=result.is_error,
    )


async def _settle(agent: Agent, result: results.ToolResult, request_id: str) -> results.ToolResult:
    """Give a just auto-approved proposal a moment to execute, so the answer can say what happened."""
    proposal_id = result.settle
    with anyio.move_on_after(SETTLE_SECONDS):
        while True:
            await anyio.sleep(SETTLE_POLL_SECONDS)
            try:
                result = await in_thread(with_request_id(request_id, results.proposal_result), agent, proposal_id)
            except Exception:  # the proposal is recorded either way: report what is known rather than fail the call
                logger.warning(
                    "mcp: could not re-read proposal %s (request %s)", proposal_id, request_id, exc_info=True
                )
                break
            if result.structured["outcome"] != "approved":
                break
    return result


def _bearer(ctx: ServerRequestContext[Any, Any]) -> str:
    """The call's own bearer token (the SDK's middleware let the request in with it): wait_for_decision checks it
    again at each poll, so a token revoked during the wait ends it."""
    headers = getattr(ctx.request, "headers", None)
    scheme, _, token = (headers.get("authorization", "") if headers is not None else "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _source(ctx: ServerRequestContext[Any, Any]) -> str | None:
    client = getattr(ctx.request, "client", None)
    return client.host if client is not None else _CLIENT_ADDRESS.get()


# --- Resources and logging --------------------------------------------------------------------------------------


async def list_resources(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    """Nothing to list (agents.mcp.resources says why): the templates name what may be read."""
    agent = _calling_agent()
    await _refusing(ctx, lambda request_id: in_thread(with_request_id(request_id, resources.may_list), agent))
    return types.ListResourcesResult(resources=[])


async def list_resource_templates(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    agent = _calling_agent()
    listed = await _refusing(
        ctx, lambda request_id: in_thread(with_request_id(request_id, resources.list_templates), agent)
    )
    return types.ListResourceTemplatesResult(resource_templates=listed)


async def read_resource(
    ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    agent = _calling_agent()
    address = str(params.uri)

    async def read(request_id: str) -> types.ReadResourceResult:
        work = functools.partial(in_thread, with_request_id(request_id, resources.read), agent, address)
        return await notices.noticed(ctx, address, work, request_id=request_id)

    return await _refusing(ctx, read, uri=address[:300])


async def set_logging_level(
    ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
) -> types.EmptyResult:
    """Accepted, and kept nowhere: the endpoint is stateless, so a level is the call's own (agents.mcp.notices)."""
    _calling_agent()
    return types.EmptyResult()


def build_server() -> Server[Any]:
    try:
        gatehouse_version = version("gatehouse")
    except PackageNotFoundError:
        gatehouse_version = ""
    server = Server(
        "gatehouse",
        version=gatehouse_version,
        title="Gatehouse",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
    )
    # The logging capability is declared by serving logging/setLevel. The constructor's on_set_logging_level warns
    # that the 2026-07-28 revision deprecates it; clients of the revisions before (2025-11-25, most of them) use it.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_logging_level)
    return server


# --- One ASGI application -------------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def host_refusal(scope: Scope) -> PlainTextResponse | None:
    """Django's Host rule (ALLOWED_HOSTS) for /mcp too, and a browser Origin must be one of the site's own."""
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django's HttpRequest.get_host
    domain, _ = split_domain_port(_header(scope, b"host") or "")
    if not domain or not validate_host(domain, allowed):
        return PlainTextResponse("Invalid Host header", status_code=421)
    origin = _header(scope, b"origin")
    if origin and origin not in settings.CSRF_TRUSTED_ORIGINS:
        origin_domain, _ = split_domain_port(urlsplit(origin).netloc)
        if not origin_domain or not validate_host(origin_domain, allowed):
            return PlainTextResponse("Invalid Origin header", status_code=403)
    return None


class Router:
    """`/mcp` to the MCP SDK's app, everything else to Django; the lifespan runs the SDK's session manager.

    Django's ASGI handler does not speak the lifespan protocol, so the router answers it: the SDK's session manager
    (its task group) runs from startup to shutdown of each process.
    """

    def __init__(self, django_app: DjangoASGI, server: Server[Any], mcp_app: ASGIApp) -> None:
        self.django_app = django_app
        self.server = server
        self.mcp_app = mcp_app
        self.ready = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and (scope["path"] == PATH or scope["path"].startswith(PATH + "/")):
            await self._mcp(scope, receive, send)
        else:
            await self.django_app(scope, receive, send)

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = host_refusal(scope)
        if refusal is None and not self.ready:
            refusal = PlainTextResponse(
                "The MCP endpoint is not running: serve with the ASGI lifespan on (uvicorn's default).", 503
            )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        client = scope.get("client")
        entered = _CLIENT_ADDRESS.set(client[0] if client else None)
        try:
            await self.mcp_app(scope, receive, send)
        finally:
            _CLIENT_ADDRESS.reset(entered)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.server.session_manager.run())
            except Exception as exc:
                logger.exception("mcp: the session manager did not start")
                await send({"type": "lifespan.startup.failed", "message": f"MCP session manager: {exc}"})
                return
            self.ready = True
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            self.ready = False
        await send({"type": "lifespan.shutdown.complete"})


def with_mcp(django_app: DjangoASGI) -> Router:
    """Django's ASGI application with the MCP endpoint mounted at /mcp."""
    server = build_server()
    mcp_app = server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        json_response=True,  # one JSON body, upgraded to an event stream by a call's first notification (streams)
        max_request_body_size=settings.GATEHOUSE_MAX_BODY_BYTES,  # the API's limit: larger bodies answer 413
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),  # see host_refusal
        auth=AuthSettings(issuer_url=AnyHttpUrl(settings.BASE_URL), resource_server_url=None),
        token_verifier=AgentTokenVerifier(),
    )
    return Router(django_app, server, JsonUnlessNotified(mcp_app))
