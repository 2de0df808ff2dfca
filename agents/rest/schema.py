"""drf-spectacular extensions: how the agent API's bearer tokens and strict request bodies appear in the OpenAPI
document."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension


class AgentTokenScheme(OpenApiAuthenticationExtension):
    target_class = "agents.rest.auth.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An agent token (gh_…) from `manage.py issue_token AGENT` or the admin; shown once.",
        }


class StrictSerializerSchema(OpenApiSerializerExtension):
    """A StrictSerializer refuses fields it does not declare: the document says so (`additionalProperties: false`),
    so a client generated from it, and a fuzzer reading it, know an extra field is an error, not ignored."""

    target_class = "agents.shapes.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}
