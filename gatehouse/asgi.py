"""ASGI entry point (uvicorn, or gunicorn with uvicorn workers): Django, with the MCP endpoint at /mcp."""

import os

from django.core.asgi import get_asgi_application
from django.db import connections

from gatehouse.tracing import traced_asgi, tracing_start

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")
# Every ASGI request runs its sync code in a thread of its own: pooled connections, not persistent ones (settings).
os.environ.setdefault("GATEHOUSE_DB_POOL_SIZE", "10")
tracing_start("web")  # before Django loads its middleware (OTEL_* variables; off by default)
django_application = get_asgi_application()

from agents.mcp.server import with_mcp  # noqa: E402 - needs the apps loaded
from console.metrics import with_mcp_metrics  # noqa: E402 - needs the apps loaded
from gatehouse.startup import check_at_start  # noqa: E402 - needs the apps loaded

# /mcp goes to the MCP SDK's streamable HTTP app, everything else to Django; the lifespan runs the SDK's sessions.
# /mcp's latency is observed around the router: Django's middleware never sees those requests.
router = with_mcp(django_application)
router.mcp_app = traced_asgi(router.mcp_app)  # with tracing on, each /mcp request a server span of its own
application = with_mcp_metrics(router)

check_at_start()
# That check borrowed a connection on the event loop's thread, which never finishes a request: give it back.
connections.close_all()
