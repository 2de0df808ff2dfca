"""A queryset of fixed shape compiled to SQL once and run again with new values: the hot paths' lookups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.query import get_related_populators  # type: ignore[attr-defined]  # Django's, not in the stubs

M = TypeVar("M", bound=models.Model)


class CompiledQuery(Generic[M]):
    """A queryset of fixed shape, compiled to SQL once per database and run again with new values.

    Building and compiling a queryset costs more Python time than the database spends answering it (PERFORMANCE.md:
    the web tier's CPU is the bottleneck). `build(**sentinels)` returns the queryset; each sentinel is a value of the
    right type that no real call uses, and must reach the SQL parameters unchanged (or as the backend adapts a
    datetime). `run(**values)` puts the real values where the sentinels were and turns the rows into model instances
    the way Django's own ModelIterable does: select_related objects, annotations and field converters included.
    """

    def __init__(self, build: Callable[..., models.QuerySet[M]], **sentinels: Any) -> None:
        self._build = build
        self._sentinels = sentinels
        self._plans: dict[str, _Plan] = {}

    def run(self, using: str = DEFAULT_DB_ALIAS, **values: Any) -> list[M]:
        plan = self._plans.get(using) or self._plan(using)
        connection = connections[using]
        params = list(plan.params)
        for name, positions in plan.positions.items():
            value = _adapt(values[name], connection)
            for position in positions:
                params[position] = value
        with connection.cursor() as cursor:
            cursor.execute(plan.sql, params)
            rows = cursor.fetchall()
        objects: list[M] = []
        for row in rows:
            if plan.converters:
                row = list(row)
                for position, converters, expression in plan.converters:
                    value = row[position]
                    for converter in converters:
                        value = converter(value, expression, connection)
                    row[position] = value
            obj = plan.model.from_db(using, plan.init_list, row[plan.start : plan.end])
            for populator in plan.populators:
                populator.populate(row, obj)
            for name, position in plan.annotations:
                setattr(obj, name, row[position])
            objects.append(cast(M, obj))
        return objects

    def _plan(self, using: str) -> _Plan:
        connection = connections[using]
        compiler = self._build(**self._sentinels).query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        positions: dict[str, list[int]] = {}
        for name, sentinel in self._sentinels.items():
            adapted = _adapt(sentinel, connection)
            found = [i for i, param in enumerate(params) if type(param) is type(adapted) and param == adapted]
            if not found:
                raise ValueError(f"CompiledQuery: the sentinel for {name!r} does not reach the SQL parameters.")
            positions[name] = found
        select, klass_info = compiler.select, compiler.klass_info
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        converters = []
        for position, (expression, _sql, _alias) in enumerate(select):
            found = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
            if found:
                converters.append((position, found, expression))
        plan = _Plan(
            sql=sql,
            params=tuple(params),
            positions=positions,
            model=klass_info["model"],
            init_list=[column[0].target.attname for column in select[start:end]],
            start=start,
            end=end,
            populators=get_related_populators(klass_info, select, using),
            annotations=list(compiler.annotation_col_map.items()),
            converters=converters,
        )
        self._plans[using] = plan
        return plan


@dataclass(frozen=True)
class _Plan:
    sql: str
    params: tuple
    positions: dict[str, list[int]]
    model: type[models.Model]
    init_list: list[str]
    start: int
    end: int
    populators: list
    annotations: list[tuple[str, int]]
    converters: list[tuple[int, list, Any]]


def _adapt(value: Any, connection: Any) -> Any:
    """A value as the compiler passes it to the driver: only datetimes are adapted (SQLite stores text)."""
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    return value
