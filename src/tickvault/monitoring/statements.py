"""What a SQL statement is: its type (SELECT, INSERT, …) and the table it is about.

Parsed from the statement text once and cached by text, so a statement run a million times
costs one dictionary look-up after the first.
"""

import re
from dataclasses import dataclass
from functools import lru_cache

QUERY_TYPES = ("SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "OTHER")

_TABLE_AFTER = {
    "INSERT": re.compile(r"\bINTO\s+\"?([\w.]+)\"?", re.IGNORECASE),
    "UPDATE": re.compile(r"^\s*UPDATE\s+(?:ONLY\s+)?\"?([\w.]+)\"?", re.IGNORECASE),
    "DELETE": re.compile(r"\bFROM\s+(?:ONLY\s+)?\"?([\w.]+)\"?", re.IGNORECASE),
    "SELECT": re.compile(r"\bFROM\s+\"?([\w.]+)\"?", re.IGNORECASE),
    "COPY": re.compile(r"^\s*COPY\s+\"?([\w.]+)\"?", re.IGNORECASE),
}
_WITH_MAIN = re.compile(r"\)\s*(SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
# A statement may name the table it is about right after its keyword, when its first FROM
# is another one: ``SELECT /* table: market_data */ … FROM instruments JOIN LATERAL …``.
_TABLE_HINT = re.compile(r"^\s*\w+\s+/\*\s*table:\s*(\w+)\s*\*/")


# Transaction control is plumbing (tickvault's SQLite engine emits BEGIN itself): not a query.
_NOT_QUERIES = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END"})


def table_hint(table: str) -> str:
    """The comment that makes ``classify`` count a statement for ``table`` (put it right
    after the statement's keyword: SQLAlchemy's ``prefix_with``)."""
    return f"/* table: {table} */"


@dataclass(frozen=True, slots=True)
class StatementInfo:
    query_type: str
    table: str | None


@lru_cache(maxsize=4096)
def classify(statement: str) -> StatementInfo | None:
    """What a statement does and to which table; ``None`` for transaction control.

    ``classify("SELECT … FROM market_data WHERE …")`` → ``StatementInfo("SELECT", "market_data")``
    """
    head = statement.lstrip()[:10].upper()
    keyword = head.split(None, 1)[0].rstrip(";") if head else ""
    if keyword in _NOT_QUERIES:
        return None
    if keyword == "WITH":
        # A CTE: the main statement follows the last closing parenthesis of the WITH list.
        matches = list(_WITH_MAIN.finditer(statement))
        keyword = matches[-1].group(1).upper() if matches else "SELECT"
        statement = statement[matches[-1].start() + 1 :] if matches else statement
    query_type = keyword if keyword in _TABLE_AFTER else "OTHER"
    if query_type == "OTHER":
        return StatementInfo("OTHER", None)
    match = _TABLE_HINT.match(statement) or _TABLE_AFTER[query_type].search(statement)
    table = match.group(1).split(".")[-1].lower() if match else None
    return StatementInfo(query_type, table)
