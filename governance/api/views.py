"""Agent API views: thin; every rule lives in the services."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.serializers import MeSerializer


class MeView(APIView):
    """The calling agent: its slug, status and current grants."""

    @extend_schema(responses=MeSerializer, summary="The calling agent and its grants")
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)
