"""drf-spectacular extensions: how the agent API's bearer tokens appear in the OpenAPI document."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AgentTokenScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.auth.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An agent token (gh_…) from `manage.py issue_token AGENT` or the admin; shown once.",
        }
