"""Agent API views: thin; every check and every audit event lives in the services."""

from __future__ import annotations

import re
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import exceptions as drf
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import shapes
from agents.rest import serializers as s
from agents.rest.auth import calling_agent
from agents.shapes import flatten_errors
from approvals.choices import ProposalStatus
from approvals.models import Proposal
from approvals.services import ProposalRequest, proposal_cancel, proposal_create
from audit.choices import Channel
from connectors.reads import events_list, record_read
from core.errors import GatehouseError, InvalidPayload, MalformedRequest, NotFound, PayloadTooLarge
from core.problems import PROBLEM_CONTENT_TYPE
from governance.choices import Access
from governance.gate import Target, ensure_may_act, refuse
from governance.models import ActionType, Agent, ScopeGrant, System

CHANNEL = Channel.API
MAX_EVENT_ID = 2**62  # the largest `after` accepted: beyond any id the events table can hold


def problems(*codes: tuple[int, str]) -> dict[tuple[int, str], OpenApiResponse]:
    """OpenAPI entries for the problem+json answers an endpoint can give, under their own media type (a client that
    checks the Content-Type against the document must find application/problem+json there, not application/json)."""
    by_status: dict[int, list[str]] = {}
    for status, code in codes:
        names = by_status.setdefault(status, [])
        if code not in names:
            names.append(code)
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            s.ProblemSerializer, description="problem+json; code: " + " | ".join(names)
        )
        for status, names in by_status.items()
    }


# Every call: no token, a disabled agent, too many calls, the global stop.
COMMON = (
    (401, "unauthenticated"),
    (403, "agent_disabled"),
    (429, "throttled"),
    (503, "system_frozen"),
    (503, "database_unavailable"),
)


_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,20}")
IDEMPOTENCY_KEY = shapes.IDEMPOTENCY_KEY
# A system or resource slug, as the URLconf's `slug` converter matches it (and the events' `system` filter checks it).
SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"


def _integer(low: int, high: int) -> dict[str, Any]:
    """The OpenAPI schema of a whole-number query parameter that `_int_param` bounds the same way."""
    return {"type": "integer", "minimum": low, "maximum": high}


class MeView(APIView):
    @extend_schema(
        responses={200: s.MeSerializer, **problems(*COMMON)},
        summary="The calling agent and its grants",
    )
    def get(self, request: Request) -> Response:
        ensure_may_act(calling_agent(request), channel=CHANNEL, write=False)  # the global stop refuses every call
        return Response(s.MeSerializer(calling_agent(request)).data)


class SystemsView(APIView):
    @extend_schema(
        operation_id="systems_list",
        responses={200: s.SystemSerializer(many=True), **problems(*COMMON, (503, "system_frozen"))},
        summary="Systems the agent holds a grant on, with readable resources and proposable actions",
    )
    def get(self, request: Request) -> Response:
        agent = calling_agent(request)
        ensure_may_act(agent, channel=CHANNEL, write=False)
        grants = list(ScopeGrant.objects.for_agent(agent))
        systems: dict[int, dict[str, Any]] = {}
        for grant in grants:
            entry = systems.setdefault(grant.system_id, {"system": grant.system, "resources": {}, "actions": set()})
            if grant.access == Access.READ:
                fields = entry["resources"].setdefault(grant.resource, [])
                fields.extend(name for name in (grant.fields or grant.resource.fields) if name not in fields)
            else:
                entry["actions"].update((grant.resource_id, name) for name in grant.actions)
        actions = {
            (action.system_id, action.resource_id, action.name): action
            for action in ActionType.objects.filter(system_id__in=systems).select_related("resource")
        }
        body = []
        for system_id, entry in sorted(systems.items(), key=lambda item: item[1]["system"].slug):
            system: System = entry["system"]
            body.append(
                {
                    "slug": system.slug,
                    "name": system.name,
                    "category": system.category,
                    "environment": system.environment,
                    "integration_pattern": system.integration_pattern,
                    "write_mode": system.write_mode,
                    "resources": [
                        {"name": resource.name, "label": resource.label, "readable_fields": fields}
                        for resource, fields in entry["resources"].items()
                    ],
                    "actions": [
                        actions[(system_id, resource_id, name)]
                        for resource_id, name in sorted(entry["actions"], key=lambda pair: pair[1])
                        if (system_id, resource_id, name) in actions
                    ],
                }
            )
        return Response(s.SystemSerializer(body, many=True).data)


class RecordView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "system",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                pattern=SLUG_PATTERN,
                description="The system's slug, as /systems lists it",
                examples=[OpenApiExample("the demo CRM", value="crm")],
            ),
            OpenApiParameter(
                "resource",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                pattern=SLUG_PATTERN,
                description="A resource the agent may read on that system",
                examples=[OpenApiExample("its accounts", value="accounts")],
            ),
            OpenApiParameter(
                "record_id",
                shapes.RECORD_ID_SCHEMA,
                OpenApiParameter.PATH,
                description="The record's id in the system: " + shapes.RECORD_ID_RULE,
                examples=[OpenApiExample("an account", value="4471")],
            ),
        ],
        responses={
            200: s.RecordSerializer,
            **problems(
                *COMMON,
                (403, "scope_denied"),
                (404, "not_found"),
                (422, "invalid_payload"),
                (503, "system_frozen"),
                (503, "system_unavailable"),
            ),
        },
        summary="Read one record through the system's connector; only granted fields are returned",
    )
    def get(self, request: Request, system: str, resource: str, record_id: str) -> Response:
        agent = calling_agent(request)
        problem = shapes.record_id_problem(record_id)
        if problem is not None:
            raise _refuse_record_id(agent, system, resource, record_id, problem)
        return Response(
            record_read(agent=agent, system_slug=system, resource_name=resource, record_id=record_id, channel=CHANNEL)
        )


def _refuse_record_id(agent: Agent, system: str, resource: str, record_id: str, problem: str) -> GatehouseError:
    """The record-id rule's audited 422, before any connector is called. The URLconf's `str` converter lets through
    all but "/" and "", percent-decoded: ".." (also sent as %2E%2E), "4471%0A", 201 characters, so the rule, not the
    URLconf, answers for those, as at the other doors."""
    ensure_may_act(agent, channel=CHANNEL, write=False)  # a stopped agent hears that, as on the MCP read tool
    return refuse(
        InvalidPayload("The record id in the path is not a record id.", errors={"record_id": problem}),
        agent=agent,
        channel=CHANNEL,
        target=Target(
            system=System.objects.filter(slug=system).first(),  # the URL's slug converter lets no NUL through
            resource=resource,
            record_id=record_id[:200],
            detail={"record_id": record_id[:300]},
        ),
    )


class ProposalCursor(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    max_page_size = 200
    page_size_query_param = "limit"

    def decode_cursor(self, request: Request) -> Cursor | None:
        """DRF's, and the position must be a time: the cursor is only base64, and a forged one with any other
        position would reach the query as a created_at value and fail there, a 500 instead of not_found."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                position = parse_datetime(str(cursor.position))
            except ValueError:
                position = None
            if position is None:
                raise drf.NotFound(self.invalid_cursor_message)
        return cursor


class ProposalsView(APIView):
    @extend_schema(
        request=shapes.ProposalCreateSerializer,
        examples=[
            OpenApiExample(
                "raise a credit limit",
                value={
                    "system": "crm",
                    "action": "update_credit_limit",
                    "record_id": "4471",
                    "payload": {"credit_limit": "2300.00"},
                    "reason": "paid on time for 12 months",
                },
                request_only=True,
            )
        ],
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": IDEMPOTENCY_KEY.pattern},
                OpenApiParameter.HEADER,
                description="Recommended. A replay of the same request returns the first response; the same key "
                "with a different request answers 409 idempotency_conflict. Kept at least 24 hours.",
            )
        ],
        responses={
            201: shapes.ProposalSerializer,
            200: OpenApiResponse(
                shapes.ProposalSerializer, description="Replay of an Idempotency-Key: the first response"
            ),
            **problems(
                *COMMON,
                (400, "malformed_request"),
                (403, "scope_denied"),
                (404, "not_found"),
                (409, "idempotency_conflict"),
                (409, "action_paused"),
                (413, "payload_too_large"),
                (422, "invalid_payload"),
                (422, "unknown_action"),
                (503, "system_frozen"),
                (503, "system_unavailable"),
            ),
        },
        summary="Propose an action; Gatehouse decides whether it executes now or waits for a human",
    )
    def post(self, request: Request) -> Response:
        agent = calling_agent(request)
        try:
            body = request.data
        except (drf.ParseError, drf.UnsupportedMediaType) as exc:
            raise refuse(MalformedRequest(str(exc.detail)), agent=agent, channel=CHANNEL, target=Target()) from exc
        except PayloadTooLarge as exc:
            raise refuse(exc, agent=agent, channel=CHANNEL, target=Target()) from None
        if not isinstance(body, dict):  # valid JSON, but an array, a string, a number or null is no request
            raise refuse(
                MalformedRequest(f"The body must be a JSON object, not {type(body).__name__}."),
                agent=agent,
                channel=CHANNEL,
                target=Target(detail={"body": str(body)[:500]}),
            )
        serializer = shapes.ProposalCreateSerializer(data=body)
        if not serializer.is_valid():
            raise refuse(
                InvalidPayload("The request has invalid fields.", errors=flatten_errors(serializer.errors)),
                agent=agent,
                channel=CHANNEL,
                target=Target(detail={"body": body if isinstance(body, dict) else str(body)[:500]}),
            )
        data = serializer.validated_data
        key = request.headers.get("Idempotency-Key")  # sent empty is refused, not taken as "no key"
        if key is not None and not (1 <= len(key) <= 255):
            raise InvalidPayload("Idempotency-Key must be 1 to 255 characters.", errors={"Idempotency-Key": "length"})
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidPayload(
                "Idempotency-Key must not contain control characters.", errors={"Idempotency-Key": "characters"}
            )
        answer = shapes.ProposalAnswer()
        proposal, replayed = proposal_create(
            agent=agent,
            request=ProposalRequest.from_validated(data),
            channel=CHANNEL,
            idempotency_key=key,
            respond=answer,
        )
        if replayed is not None:
            return Response(replayed, status=200, headers={"Idempotent-Replayed": "true"})
        return Response(
            answer.body if answer.body is not None else shapes.proposal_body(proposal, answer.grants),
            status=201,
            headers={"Location": f"/api/v1/proposals/{proposal.pk}"},
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=ProposalStatus.values, description="Only this status"),
            OpenApiParameter(
                "limit",
                _integer(1, ProposalCursor.max_page_size),
                description=f"Page size (default {ProposalCursor.page_size})",
            ),
            OpenApiParameter(
                "cursor",
                OpenApiTypes.STR,
                description="From `next` or `previous` of another page; one Gatehouse did not make is not_found",
            ),
        ],
        responses={
            200: s.ProposalPageSerializer,
            **problems(*COMMON, (404, "not_found"), (422, "invalid_payload")),
        },
        operation_id="proposals_list",
        summary="The agent's own proposals, newest first",
    )
    def get(self, request: Request) -> Response:
        ensure_may_act(calling_agent(request), channel=CHANNEL, write=False)
        queryset = Proposal.objects.visible_to(calling_agent(request)).for_api()
        errors: dict[str, str] = {}
        status = request.query_params.get("status")
        if status is not None and status not in ProposalStatus.values:
            errors["status"] = "One of: " + ", ".join(ProposalStatus.values)
        # Checked here rather than left to the paginator, which silently serves its default for a size it can't use.
        _int_param(request, "limit", ProposalCursor.page_size, 1, ProposalCursor.max_page_size, errors)
        if errors:
            raise InvalidPayload("Invalid query parameters.", errors=errors)
        if status is not None:
            queryset = queryset.filter(status=status)
        paginator = ProposalCursor()
        page = paginator.paginate_queryset(queryset, request, view=self)
        grants = shapes.ReadGrants()  # one per page: the grants are read once for all its proposals
        return paginator.get_paginated_response([shapes.proposal_body(proposal, grants) for proposal in page or []])


def _own_proposal(request: Request, proposal_id: str) -> Proposal:
    ensure_may_act(calling_agent(request), channel=CHANNEL, write=False)
    proposal = Proposal.objects.visible_to(calling_agent(request)).for_api().filter(pk=proposal_id).first()
    if proposal is None:
        raise NotFound("No such proposal.")  # another agent's proposal looks exactly like a missing one
    return proposal


class ProposalDetailView(APIView):
    @extend_schema(
        responses={200: shapes.ProposalSerializer, **problems(*COMMON, (404, "not_found"))},
        summary="One of the agent's own proposals",
    )
    def get(self, request: Request, proposal_id: str) -> Response:
        return Response(shapes.proposal_body(_own_proposal(request, proposal_id)))


class ProposalCancelView(APIView):
    @extend_schema(
        request=None,
        responses={200: shapes.ProposalSerializer, **problems(*COMMON, (404, "not_found"), (409, "invalid_state"))},
        summary="Withdraw a proposal that still awaits a decision",
    )
    def post(self, request: Request, proposal_id: str) -> Response:
        proposal = proposal_cancel(proposal_id=proposal_id, agent=calling_agent(request), channel=CHANNEL)
        return Response(shapes.proposal_body(Proposal.objects.for_api().get(pk=proposal.pk)))


class EventsView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "system",
                OpenApiTypes.STR,
                pattern=SLUG_PATTERN,
                description="Only this event-queue system",
                examples=[OpenApiExample("the demo's batch system", value="legacy-inventory")],
            ),
            OpenApiParameter("after", _integer(0, MAX_EVENT_ID), description="Cursor: events with a larger id"),
            OpenApiParameter("limit", _integer(1, 500), description="At most this many (default 100)"),
        ],
        operation_id="events_list",
        responses={
            200: shapes.EventPageSerializer,
            **problems(*COMMON, (403, "scope_denied"), (404, "not_found"), (422, "invalid_payload")),
        },
        summary="Events from event-queue (legacy batch) systems the agent may read",
    )
    def get(self, request: Request) -> Response:
        errors: dict[str, str] = {}
        system = request.query_params.get("system")
        if system is not None and not re.fullmatch(SLUG_PATTERN, system):  # sent empty is refused, not taken as "all"
            errors["system"] = "Must be a system's slug."
        after = _int_param(request, "after", 0, 0, MAX_EVENT_ID, errors)
        limit = _int_param(request, "limit", 100, 1, 500, errors)
        if errors:
            raise InvalidPayload("Invalid query parameters.", errors=errors)
        events = events_list(
            agent=calling_agent(request),
            system_slug=system,
            after=after,
            limit=limit,
            channel=CHANNEL,
        )
        next_after = events[-1]["id"] if events else after
        return Response(shapes.EventPageSerializer({"events": events, "next_after": next_after}).data)


def _int_param(request: Request, name: str, default: int, low: int, high: int, errors: dict[str, str]) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _WHOLE_NUMBER.fullmatch(raw):  # int() would also take " 7", "1_000" and non-ASCII digits
        errors[name] = "Must be a whole number."
        return default
    value = int(raw)
    if not low <= value <= high:
        errors[name] = f"Must be between {low} and {high}."
    return value


# Everything the docs page loads comes from this origin (drf-spectacular-sidecar's files); Swagger UI's icons are data:
# images. A strict policy keeps it so: a page that asked another origin for anything would show blank, in every test.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI for the agent API, offline and under a strict Content-Security-Policy: its files from the sidecar
    package, its start-up script from `?script` (the split view) instead of inline, and the page without inline style
    (templates/drf_spectacular/swagger_ui.html)."""

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Content-Security-Policy"] = DOCS_CSP
        return response
