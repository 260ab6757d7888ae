"""Statements of the hot path (every job, every API request) without the ORM's compiler.

Every job's submit and finish run about ten statements; the ORM spends 0.1–0.25 ms building
each one, a plain cursor 0.01 ms (bench/README.md). These helpers write the same SQL the ORM
would for a single-table UPDATE or INSERT: values go through each field's own
`get_db_prep_save`, so types, time zones and JSON are stored exactly as `save()` stores them.
No model signals are sent (none are connected for the models these are used on). `fetch`
reads whole rows into instances through the same converters the ORM applies.
"""

from django.db import connections
from django.db.models import Model

_sql: dict[tuple, str] = {}


def _quote(conn, name: str) -> str:
    return conn.ops.quote_name(name)


def _column(model, name: str):
    field = model._meta.get_field(name)
    return field, field.column


def update(model, pk, values: dict, where: dict | None = None, using: str = "default") -> int:
    """UPDATE model's row `pk` SET `values` WHERE each `where` field equals its value; the
    number of rows changed (0 or 1)."""
    conn = connections[using]
    where = where or {}
    key = ("update", model, tuple(values), tuple(where), conn.vendor)
    sql = _sql.get(key)
    if sql is None:
        q = conn.ops.quote_name
        sets = ", ".join(f"{q(_column(model, n)[1])} = %s" for n in values)
        conditions = [f"{q(model._meta.pk.column)} = %s"]
        conditions += [f"{q(_column(model, n)[1])} = %s" for n in where]
        sql = _sql[key] = (
            f"UPDATE {q(model._meta.db_table)} SET {sets} WHERE {' AND '.join(conditions)}"
        )
    params = [_column(model, n)[0].get_db_prep_save(v, conn) for n, v in values.items()]
    params.append(pk)
    params += [_column(model, n)[0].get_db_prep_save(v, conn) for n, v in where.items()]
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def insert(objs: list[Model], using: str = "default") -> None:
    """INSERT new instances of one model in one statement; each gets its primary key."""
    model = type(objs[0])
    conn = connections[using]
    meta = model._meta
    fields = [f for f in meta.local_concrete_fields if f is not meta.pk or objs[0].pk is not None]
    q = conn.ops.quote_name
    key = ("insert", model, len(objs), len(fields), conn.vendor)
    sql = _sql.get(key)
    if sql is None:
        columns = ", ".join(q(f.column) for f in fields)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql = _sql[key] = (
            f"INSERT INTO {q(meta.db_table)} ({columns}) VALUES "
            + ", ".join([row] * len(objs))
            + f" RETURNING {q(meta.pk.column)}"
        )
    params = [f.get_db_prep_save(f.pre_save(obj, True), conn) for obj in objs for f in fields]
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()]
    for obj, pk in zip(objs, ids, strict=True):
        if obj.pk is None:
            obj.pk = pk
        obj._state.adding = False
        obj._state.db = using


def fetch(model, where: str, params: list, using: str = "default") -> list[Model]:
    """Instances of `model` from `SELECT <every column> FROM <table> <where>` (`where` is raw
    SQL with %s placeholders: "WHERE prefix = %s", optionally "… FOR UPDATE"). Values pass
    through the converters the ORM applies, so the instances equal what a queryset gives."""
    conn = connections[using]
    key = ("fetch", model, conn.vendor, using)
    plan = _sql.get(key)
    if plan is None:
        meta = model._meta
        q = conn.ops.quote_name
        fields = meta.concrete_fields
        columns = [field.get_col(meta.db_table) for field in fields]
        converters = []
        for i, column in enumerate(columns):
            found = conn.ops.get_db_converters(column) + column.get_db_converters(conn)
            if found:
                converters.append((i, found, column))
        select = (
            "SELECT "
            + ", ".join(f"{q(meta.db_table)}.{q(f.column)}" for f in fields)
            + f" FROM {q(meta.db_table)} "
        )
        plan = _sql[key] = (select, [f.attname for f in fields], converters)
    select, names, converters = plan
    with conn.cursor() as cursor:
        cursor.execute(select + where, params)
        rows = cursor.fetchall()
    objs = []
    for row in rows:
        values = list(row)
        for i, functions, column in converters:
            value = values[i]
            for function in functions:
                value = function(value, column, conn)
            values[i] = value
        objs.append(model.from_db(using, names, values))
    return objs
