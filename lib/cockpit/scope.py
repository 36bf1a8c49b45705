"""Scopes: which slice of the organisation a query or a viewer covers.

A scope is applied where data is read, as SQL predicates with bound
parameters, so a dashboard cannot widen it by changing a widget value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from cockpit.errors import ScopeError

#: Scope fields and the fact-table column (or subquery) each one filters.
_FILTER_SQL = {
    "region": "{alias}region = ?",
    "business_unit": "{alias}business_unit = ?",
    "team": "{alias}rep_id IN (SELECT rep_id FROM reps WHERE team = ?)",
    "rep_id": "{alias}rep_id = ?",
    "account_id": "{alias}account_id = ?",
    "product_line": "{alias}product_id IN (SELECT product_id FROM products WHERE product_line = ?)",
}


@dataclass(frozen=True)
class Scope:
    """A slice of the organisation; a field left as None does not filter.

    The company-wide scope is `Scope()`.
    """

    region: str | None = None
    business_unit: str | None = None
    team: str | None = None
    rep_id: str | None = None
    account_id: str | None = None
    product_line: str | None = None

    def where(self, alias: str = "") -> tuple[str, list[str]]:
        """Return a SQL predicate and its parameters; 'TRUE' for no filter.

        `alias` is the table alias with its dot, e.g. ``"t."``.
        """
        clauses: list[str] = []
        params: list[str] = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            clauses.append(_FILTER_SQL[field.name].format(alias=alias))
            params.append(value)
        return (" AND ".join(clauses) if clauses else "TRUE"), params

    def narrow(self, **changes: str | None) -> Scope:
        """Return a scope inside this one, refusing to widen any set field.

        Raises ScopeError when a change would replace a value this scope
        already fixes, e.g. asking for region East inside a West scope.
        """
        for name, value in changes.items():
            current = getattr(self, name)
            if current is not None and value != current:
                raise ScopeError(
                    f"{name}={value!r} is outside the allowed scope {name}={current!r}; "
                    "ask an administrator to extend the viewer's scope"
                )
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def label(self) -> str:
        """Human-readable description, e.g. 'region East, business unit Tools'."""
        parts = [
            f"{field.name.replace('_', ' ')} {getattr(self, field.name)}"
            for field in fields(self)
            if getattr(self, field.name) is not None
        ]
        return ", ".join(parts) if parts else "whole company"


#: Query listing the members of each scope field in the mart.
_MEMBERS = {
    "region": "SELECT region FROM transactions UNION SELECT region FROM opportunities",
    "business_unit": "SELECT business_unit FROM products",
    "team": "SELECT team FROM reps",
    "rep_id": "SELECT rep_id FROM reps",
    "account_id": "SELECT account_id FROM accounts",
    "product_line": "SELECT product_line FROM products",
}


def check_scope(con, scope: Scope) -> None:
    """Raise ScopeError when a scope value names no member of the mart.

    Names are compared exactly, so 'west' does not match 'West'; the error
    lists the values the mart has (at most 20).
    """
    for field in fields(scope):
        value = getattr(scope, field.name)
        if value is None:
            continue
        rows = con.execute(_MEMBERS[field.name]).fetchall()
        members = sorted({str(row[0]) for row in rows if row[0] is not None})
        if value not in members:
            shown = ", ".join(members[:20]) + (" …" if len(members) > 20 else "")
            raise ScopeError(
                f"{field.name.replace('_', ' ')} {value!r} is not in the mart; "
                f"choose one of: {shown or 'none loaded'}"
            )
