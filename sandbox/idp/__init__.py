"""Sample identity provider: a small Django project of its own, on django-oauth-toolkit's OpenID Connect support.

It stands in for a company's Okta, Entra ID or Keycloak in demos and tests: a real process on loopback that signs
people in with a password, issues RS256 ID tokens (a key made at each start), publishes its discovery document and
keys, and answers userinfo — with a `groups` claim, as Gatehouse's role map expects. It shares no code with
Gatehouse. See `__main__.py` for how to run it.
"""
