"""Routes of the agent API, mounted at /api/v1/."""

from django.urls import path, register_converter
from drf_spectacular.views import SpectacularAPIView

from agents.rest import schema, views  # noqa: F401 - schema registers the OpenAPI auth extension


class AnyRecordId:
    """Whatever follows the resource: empty, with slashes (a%2Fb arrives decoded as a/b), dots, newlines. The view
    judges it by the one record-id rule (agents.shapes), so "", "a/b" and ".." answer the rule's 422, as at every other
    door, rather than a bare 404 or, for "." and "..", a read of something that is no record."""

    regex = r"[\s\S]*"  # not `.*`: "4471\n" (4471%0A) must reach the rule too, not fall through to a 404

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(AnyRecordId, "any_record_id")

urlpatterns = [
    path("me", views.MeView.as_view(), name="api-me"),
    path("systems", views.SystemsView.as_view(), name="api-systems"),
    path(
        "systems/<slug:system>/<slug:resource>/<any_record_id:record_id>",
        views.RecordView.as_view(),
        name="api-record",
    ),
    path("proposals", views.ProposalsView.as_view(), name="api-proposals"),
    path("proposals/<uuid:proposal_id>", views.ProposalDetailView.as_view(), name="api-proposal"),
    path("proposals/<uuid:proposal_id>/cancel", views.ProposalCancelView.as_view(), name="api-proposal-cancel"),
    path("events", views.EventsView.as_view(), name="api-events"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", views.ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),  # offline, strict CSP
]
