"""Routes of the agent API, mounted at /api/v1/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from agents.rest import schema, views  # noqa: F401 - schema registers the OpenAPI auth extension

urlpatterns = [
    path("me", views.MeView.as_view(), name="api-me"),
    path("systems", views.SystemsView.as_view(), name="api-systems"),
    path("systems/<slug:system>/<slug:resource>/<str:record_id>", views.RecordView.as_view(), name="api-record"),
    path("proposals", views.ProposalsView.as_view(), name="api-proposals"),
    path("proposals/<uuid:proposal_id>", views.ProposalDetailView.as_view(), name="api-proposal"),
    path("proposals/<uuid:proposal_id>/cancel", views.ProposalCancelView.as_view(), name="api-proposal-cancel"),
    path("events", views.EventsView.as_view(), name="api-events"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
