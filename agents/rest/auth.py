"""Bearer-token authentication for the agent API, and the permission that refuses disabled agents."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from audit.choices import Channel, Verb
from audit.services import audit_record
from core.errors import AgentDisabled
from governance.models import Agent, AgentToken
from governance.services import agent_authenticate

# One message for every failure: unknown, malformed, expired, revoked and wrong-secret tokens look alike.
_REFUSAL = "A valid bearer token is required."


class AgentTokenAuthentication(BaseAuthentication):  # OpenAPI: agents/rest/schema.py
    """`Authorization: Bearer <token>` → the Agent. Anything else is refused with 401."""

    def authenticate(self, request: Request) -> tuple[Agent, AgentToken] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != b"bearer" or len(header) != 2:
            raise AuthenticationFailed(_REFUSAL)
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed(_REFUSAL) from exc
        found = agent_authenticate(raw, source=request.META.get("REMOTE_ADDR"), channel=Channel.API)
        if found is None:
            raise AuthenticationFailed(_REFUSAL)
        return found

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="gatehouse"'


class IsActiveAgent(BasePermission):
    """Only an authenticated, active agent gets through; a disabled one is refused and the refusal audited."""

    def has_permission(self, request: Request, view: Any) -> bool:
        agent = request.user
        if not isinstance(agent, Agent):
            return False
        if not agent.is_active:
            audit_record(
                verb=Verb.DENIED,
                actor=agent,
                channel=Channel.API,
                outcome=AgentDisabled.code,
                input={"method": request.method, "path": request.path},
                summary=f"{agent.slug} was refused: the agent is disabled ({agent.disabled_reason}).",
            )
            raise AgentDisabled(f"Agent {agent.slug} is disabled: {agent.disabled_reason}")
        return True


def calling_agent(request: Request) -> Agent:
    """The agent a request authenticated as. Every view of the API runs behind IsActiveAgent, so anything else is a
    missing token, refused as such rather than passed to a service."""
    agent = request.user
    if not isinstance(agent, Agent):
        raise AuthenticationFailed(_REFUSAL)
    return agent
