"""Run one analyst query from ``sql/`` against the lakehouse.

Every Delta table under the lakehouse root is visible by its name (a temp
view). Queries take named parameters (``:run_date``), bound by Spark, never by
string pasting; a parameter a query uses but the caller did not give fails
with its name.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

from pyspark.sql import DataFrame

from core.errors import RecoError
from jobs.lakehouse import Lakehouse
from jobs.tables import list_tables

# string literals ('..', "..", with '' or backslash escapes), line and block comments
_STRINGS = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|--[^\n]*|/\*.*?\*/", re.S)
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_DEFAULTS = re.compile(r"^--\s*param\s+(\w+)\s*=\s*(\S+)", re.M)


class SqlError(RecoError):
    pass


def parameters(text: str) -> List[str]:
    """Named parameters a query uses (outside string literals and comments)."""
    return sorted(set(_PARAM.findall(_STRINGS.sub(" ", text))))


def parse_params(pairs: List[str]) -> Dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SqlError(f"--param must be NAME=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def run_sql(lh: Lakehouse, text: str, params: Dict[str, str], where: str = "query") -> DataFrame:
    """Run ``text`` with ``params`` and return its (small, computed) result.

    The result is computed here, so a bad parameter value (``2024-13-45``)
    fails as a :class:`SqlError` naming the parameters, not later.
    """
    from pyspark.errors import PySparkException

    tables = list_tables(lh)
    # only this lakehouse's tables are visible: drop views left by an earlier call
    for t in lh.spark.catalog.listTables():
        if t.isTemporary and t.name not in tables:
            lh.spark.catalog.dropTempView(t.name)
    for name in tables:
        lh.read(name).createOrReplaceTempView(name)
    values = {**dict(_DEFAULTS.findall(text)), **params}
    needed = parameters(text)
    missing = [p for p in needed if p not in values]
    if missing:
        raise SqlError(f"{where} needs parameter(s) {missing}: pass --param {missing[0]}=VALUE")
    args = {k: values[k] for k in needed}
    try:
        return lh.spark.sql(text, args=args).localCheckpoint(eager=True)
    except PySparkException as exc:  # analysis, parse and runtime errors: name the file, tables and values
        given = ", ".join(f"{k}={v}" for k, v in args.items()) or "none"
        raise SqlError(f"{where} failed: {str(exc).splitlines()[0]} (parameters: {given}; "
                       f"tables: {', '.join(tables) or 'none'})") from None


def run_sql_file(lh: Lakehouse, path: Path, params: List[str]) -> DataFrame:
    if not path.exists():
        raise SqlError(f"no SQL file {path}; the queries are in sql/ (e.g. sql/daily_sales.sql)")
    return run_sql(lh, path.read_text(), parse_params(params), where=str(path))
