"""Gatehouse's routes plus the empty views that anchor the ratios (PERFORMANCE.md)."""

import os

from django.http import JsonResponse
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from gatehouse.urls import urlpatterns as gatehouse


def empty_django(request):
    return JsonResponse({})


class EmptyDRF(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def get(self, request):
        return Response({})


if os.environ.get("GATEHOUSE_BENCH_CHAIN") == "off":  # what the audit chain's lock costs (bench/chainless.py)
    from bench import chainless

    chainless.install()

urlpatterns = [
    path("bench/empty-django", empty_django),
    path("bench/empty-drf", EmptyDRF.as_view()),
    *gatehouse,
]
