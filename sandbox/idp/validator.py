"""The claims the sample provider gives: who the person is and their groups, read from the people file at each
token, so a group taken away in the file is gone from the next sign-in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator


def directory() -> dict[str, dict[str, Any]]:
    """The people file: {"username": {"password", "email", "name", "groups": [...]}}."""
    return json.loads(Path(os.environ["IDP_PEOPLE"]).read_text())


class Validator(OAuth2Validator):
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "groups"}

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        username = request.user.username
        person = directory().get(username, {})
        given, _, family = str(person.get("name", "")).partition(" ")
        return {
            "preferred_username": username,
            "name": person.get("name", ""),
            "given_name": given,
            "family_name": family,
            "email": person.get("email", ""),
            "email_verified": True,
            "groups": list(person.get("groups", [])),
        }
