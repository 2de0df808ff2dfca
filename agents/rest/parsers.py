"""The JSON body parser of the agent API: bounded in size and depth, strict about what JSON is."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from core.errors import PayloadTooLarge


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, iteratively (a recursive walk would be the attack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.GATEHOUSE_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"The body is not valid JSON: {exc}") from exc
        except RecursionError:
            raise ParseError("The body is nested too deeply.") from None
        if _depth(data, settings.GATEHOUSE_MAX_JSON_DEPTH) > settings.GATEHOUSE_MAX_JSON_DEPTH:
            raise ParseError(f"The body is nested deeper than {settings.GATEHOUSE_MAX_JSON_DEPTH} levels.")
        return data
