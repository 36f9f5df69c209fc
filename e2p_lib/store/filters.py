"""Pinecone's metadata filter language, evaluated locally: `compile_filter(filter)` -> a predicate on metadata."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
_MISSING = object()
Predicate = Callable[[Mapping[str, Any]], bool]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(stored: Any, wanted: Any) -> bool:
    """Equality as Pinecone sees it: numbers compare as numbers, but a bool never equals a number."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if _is_number(stored) and _is_number(wanted):
        return stored == wanted
    return isinstance(stored, str) and isinstance(wanted, str) and stored == wanted


def _equals(stored: Any, wanted: Any) -> bool:
    """A list field matches when any of its elements does (Pinecone's rule for arrays of strings)."""
    if isinstance(stored, list):
        return any(_same(x, wanted) for x in stored)
    return _same(stored, wanted)


def _check_scalar(field_name: str, operator: str, value: Any) -> None:
    if not (isinstance(value, (str, bool)) or _is_number(value)):
        raise ValueError(f"Filter on {field_name!r}: {operator} takes a string, number or bool; got {value!r}.")


_COMPARISONS = {"$gt": float.__gt__, "$gte": float.__ge__, "$lt": float.__lt__, "$lte": float.__le__}
_NEGATIONS = {"$ne": "$eq", "$nin": "$in"}  # $ne is "not $eq", $nin is "not $in"


def _compile_operator(field_name: str, operator: str, value: Any) -> Predicate:
    """A predicate for `{field: {operator: value}}`; the value is checked now, so a bad filter fails before a search."""
    if operator in _NEGATIONS:
        # A record without the field matches $ne / $nin, as in MongoDB whose language Pinecone's follows. Not 100%
        # sure Pinecone does the same for missing fields; e2p's records always carry every seed key, so it is moot.
        positive = _compile_operator(field_name, _NEGATIONS[operator], value)
        return lambda m: not positive(m)
    if operator == "$eq":
        _check_scalar(field_name, operator, value)
        return lambda m: _equals(m.get(field_name, _MISSING), value)
    if operator == "$in":
        if not isinstance(value, list) or not value:
            raise ValueError(f"Filter on {field_name!r}: $in and $nin take a non-empty list; got {value!r}.")
        for element in value:
            _check_scalar(field_name, operator, element)
        return lambda m: any(_equals(m.get(field_name, _MISSING), v) for v in value)
    if operator in _COMPARISONS:
        if not _is_number(value):
            raise ValueError(f"Filter on {field_name!r}: {operator} compares numbers; got {value!r}.")
        compare, bound = _COMPARISONS[operator], float(value)
        return lambda m: _is_number(stored := m.get(field_name, _MISSING)) and compare(float(stored), bound)
    if operator == "$exists":
        if not isinstance(value, bool):
            raise ValueError(f"Filter on {field_name!r}: $exists takes true or false; got {value!r}.")
        return lambda m: (field_name in m) == value
    raise ValueError(
        f"Unknown filter operator {operator!r} on {field_name!r}; use one of {', '.join(FILTER_OPERATORS)}."
    )


def compile_filter(filter: Mapping[str, Any]) -> Predicate:
    """A function metadata -> bool for a Pinecone metadata filter; raises ValueError on an unknown operator or shape.

    Grammar: a dict whose keys are field names (implicitly AND-ed) or `$and` / `$or` (each a non-empty list of
    filters). A field maps to a plain value (equality) or to a dict of operators (all must hold).
    """
    if not isinstance(filter, Mapping) or not filter:
        raise ValueError(f"A filter is a non-empty dict such as {{'type': 'alpaca'}}; got {filter!r}.")
    clauses: list[Predicate] = []
    for key, value in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{key} takes a non-empty list of filters; got {value!r}.")
            parts = [compile_filter(part) for part in value]
            combine = all if key == "$and" else any
            clauses.append(lambda m, parts=parts, combine=combine: combine(p(m) for p in parts))
        elif not isinstance(key, str) or key.startswith("$"):
            raise ValueError(f"{key!r} cannot stand at the top of a filter: use a field name, $and or $or.")
        elif isinstance(value, Mapping):
            if not value:
                raise ValueError(f"Filter on {key!r} is an empty dict; give an operator such as {{'$eq': ...}}.")
            clauses.extend(_compile_operator(key, op, operand) for op, operand in value.items())
        else:
            clauses.append(_compile_operator(key, "$eq", value))
    return lambda m: all(clause(m) for clause in clauses)
