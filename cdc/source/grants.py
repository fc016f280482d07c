"""The replication user's grants: parse ``SHOW GRANTS``, find what is missing and what is too much.

The reader needs, at the global level, ``REPLICATION SLAVE`` (``REPLICATION REPLICA``) to stream the
binlog and ``REPLICATION CLIENT`` (MariaDB 10.5+: ``BINLOG MONITOR``) to list binlogs and read the
head position, and ``SELECT`` on the source databases for snapshots and verification. ``SHOW
VIEW`` and ``SLAVE MONITOR`` (``REPLICA MONITOR``) are harmless read-only extras. Anything else
(``ALL PRIVILEGES``, ``SUPER``, ``INSERT``, ``DROP``, ``FILE``, ``GRANT OPTION``, MySQL 8 dynamic
privileges such as ``BINLOG_ADMIN``...) lets a leaked password of the replicator damage the source:
:func:`excess_privileges` names it with the ``REVOKE`` statement to run.

One ``SHOW GRANTS`` line is one :class:`Grant`. Lines are parsed with a small tokenizer that respects
quoting (backticks, single and double quotes, doubled quote characters), so identifiers containing
commas, spaces or the words ON/TO cannot confuse it. Handled forms, MariaDB and MySQL 5.7/8:

    GRANT <priv>[ (<cols>)][, ...] ON [TABLE|FUNCTION|PROCEDURE|PACKAGE [BODY]] <*.*|*|db.*|db.tbl> TO <account> [...]
    GRANT PROXY ON <account> TO <account> [WITH GRANT OPTION]
    GRANT <role>[, ...] TO <account> [WITH ADMIN OPTION]      (role membership: no privilege by itself)
    REVOKE <priv>[, ...] ON <db>.* FROM <account>            (MySQL 8 partial revokes: narrow a global grant)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Privileges the reader needs or that cannot change anything on the source.
ALLOWED = frozenset({
    "USAGE", "SELECT", "SHOW VIEW",
    "REPLICATION SLAVE", "REPLICATION REPLICA", "REPLICATION CLIENT", "BINLOG MONITOR",
    "SLAVE MONITOR", "REPLICA MONITOR",
})
_REPLICATION = ("REPLICATION SLAVE", "REPLICATION REPLICA")
_CLIENT = ("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER")  # SUPER still works for the reader, but is excess
_ALL = "ALL PRIVILEGES"
_OBJECT_TYPES = ("TABLE", "FUNCTION", "PROCEDURE", "PACKAGE BODY", "PACKAGE")


@dataclass(frozen=True)
class Grant:
    """One parsed ``SHOW GRANTS`` line."""

    kind: str  # "privileges", "proxy", "role" or "revoke"
    privileges: tuple[str, ...] = ()  # upper case, single-spaced; column privileges as "INSERT (`a`, `b`)"
    level: str = ""  # "global", "database", "table", "routine" or "proxy"
    on: str = ""  # the object as the server printed it: *.*, `db`.*, `db`.`t`, PROCEDURE `db`.`p`, ``@`%`
    db: str | None = None  # unquoted database name (a LIKE pattern at database level)
    table: str | None = None
    account: str = ""  # the grantee, e.g. 'cdc'@'%'
    roles: tuple[str, ...] = ()
    grant_option: bool = False
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)  # privilege -> columns

    @property
    def all(self) -> bool:
        return _ALL in self.privileges


class GrantParseError(ValueError):
    pass


# --- tokenizing ----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<q>`(?:[^`]|``)*`|'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")   # quoted identifier or string
  | (?P<p>[(),.@*])                                                  # punctuation
  | (?P<w>[^\s(),.@*`'"]+)                                            # a bare word
  | (?P<s>\s+)
""", re.VERBOSE)


def _tokens(line: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None:
            raise GrantParseError(f"unbalanced quote at character {pos} of {line!r}")
        kind = m.lastgroup
        if kind != "s":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _unquote(token: str) -> str:
    q = token[0]
    if q in "`'\"":
        body = token[1:-1].replace(q * 2, q)
        return body if q == "`" else re.sub(r"\\(.)", r"\1", body)
    return token


def _word(tok: tuple[str, str], *words: str) -> bool:
    return tok[0] == "w" and tok[1].upper() in words


def _find_word(tokens: list[tuple[str, str]], word: str, start: int = 0) -> int:
    depth = 0
    for i in range(start, len(tokens)):
        kind, text = tokens[i]
        if kind == "p" and text == "(":
            depth += 1
        elif kind == "p" and text == ")":
            depth -= 1
        elif depth == 0 and kind == "w" and text.upper() == word:
            return i
    return -1


def _text(tokens: list[tuple[str, str]]) -> str:
    out = ""
    for kind, text in tokens:
        if out and not (kind == "p" and text in ".,)@") and not out.endswith(("(", ".", "@")):
            out += " "
        out += text
    return out


# --- parsing ---------------------------------------------------------------------------------------------


def parse_grant(line: str) -> Grant:
    """Parse one ``SHOW GRANTS`` line; raises GrantParseError on anything it does not recognise."""
    tokens = _tokens(line.strip().rstrip(";"))
    if not tokens or not _word(tokens[0], "GRANT", "REVOKE"):
        raise GrantParseError(f"not a GRANT or REVOKE statement: {line[:80]!r}")
    revoke = _word(tokens[0], "REVOKE")
    to = _find_word(tokens, "FROM" if revoke else "TO", 1)
    if to < 0:
        raise GrantParseError(f"no {'FROM' if revoke else 'TO'} in {line[:80]!r}")
    on = _find_word(tokens, "ON", 1)
    account_end = _account_end(tokens, to + 1)
    account = _account(tokens[to + 1:account_end])
    rest = [t[1].upper() for t in tokens[account_end:] if t[0] == "w"]
    after_with = rest[rest.index("WITH"):] if "WITH" in rest else []  # WITH [MAX_... n] GRANT OPTION [MAX_... n]
    grant_option = any(after_with[i:i + 2] == ["GRANT", "OPTION"] for i in range(len(after_with)))
    if on < 0 or on > to:  # GRANT role[, role] TO account
        roles = tuple(_text(part) for part in _split(tokens[1:to]))
        return Grant(kind="role", roles=roles, account=account,
                     grant_option=any(after_with[i:i + 2] == ["ADMIN", "OPTION"] for i in range(len(after_with))))
    privileges, columns = [], {}
    for part in _split(tokens[1:on]):
        paren = next((i for i, t in enumerate(part) if t == ("p", "(")), len(part))
        name = " ".join(t[1].upper() for t in part[:paren])
        if not name:
            raise GrantParseError(f"empty privilege in {line[:80]!r}")
        if name == "ALL":
            name = _ALL
        if paren < len(part):
            cols = tuple(_unquote(t[1]) for t in part[paren:] if t[0] in ("q", "w"))
            columns[name] = cols
            name = f"{name} ({', '.join('`' + c + '`' for c in cols)})"
        privileges.append(name)
    if "GRANT OPTION" in privileges:  # MySQL may print it as a privilege
        privileges.remove("GRANT OPTION")
        grant_option = True
    obj = tokens[on + 1:to]
    level, db, table, on_text = _object(obj, line)
    kind = "revoke" if revoke else ("proxy" if level == "proxy" else "privileges")
    return Grant(kind=kind, privileges=tuple(privileges), level=level, on=on_text, db=db, table=table,
                 account=account, grant_option=grant_option, columns=columns)


def _account_end(tokens: list[tuple[str, str]], i: int) -> int:
    """Index just past ``user[@host]`` starting at ``i``."""
    if i >= len(tokens):
        return i
    i += 1
    if i < len(tokens) and tokens[i] == ("p", "@"):
        i += 2
    return min(i, len(tokens))


def _account(tokens: list[tuple[str, str]]) -> str:
    """``user@host`` in any quoting -> ``'user'@'host'``, fit for a GRANT or REVOKE statement."""
    names = [_unquote(t[1]) for t in tokens if t[1] != "@"]
    return "@".join("'" + n.replace("\\", "\\\\").replace("'", "\\'") + "'" for n in names[:2])


def _split(tokens: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    parts: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for tok in tokens:
        if tok == ("p", "("):
            depth += 1
        elif tok == ("p", ")"):
            depth -= 1
        if depth == 0 and tok == ("p", ","):
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def _object(obj: list[tuple[str, str]], line: str) -> tuple[str, str | None, str | None, str]:
    if not obj:
        raise GrantParseError(f"no object after ON in {line[:80]!r}")
    prefix = ""
    for name in _OBJECT_TYPES:
        words = name.split()
        if len(obj) > len(words) and all(_word(obj[i], w) for i, w in enumerate(words)):
            prefix, obj = name, obj[len(words):]
            break
    text = (prefix + " " if prefix else "") + _text(obj)
    if ("p", "@") in obj and ("p", ".") not in obj:
        return "proxy", None, None, text
    dot = obj.index(("p", ".")) if ("p", ".") in obj else -1
    if dot < 0:  # "ON *" or "ON tbl": the session's default database, as the server printed it
        name = _unquote(obj[0][1])
        return ("global" if name == "*" else "table"), None, (None if name == "*" else name), text
    db, table = _unquote(obj[dot - 1][1]) if dot else "*", _unquote(obj[dot + 1][1]) if dot + 1 < len(obj) else "*"
    if prefix in ("FUNCTION", "PROCEDURE", "PACKAGE", "PACKAGE BODY"):
        return "routine", db, table, text
    if db == "*":
        return "global", None, None, text
    if table == "*":
        return "database", db, None, text
    return "table", db, table, text


def parse_grants(lines: list[str]) -> tuple[list[Grant], list[str]]:
    """Every line parsed; the lines that could not be parsed come back separately (never silently dropped)."""
    grants, bad = [], []
    for line in lines:
        try:
            grants.append(parse_grant(line))
        except GrantParseError:
            bad.append(line)
    return grants, bad


# --- what is missing ------------------------------------------------------------------------------------


def _like(pattern: str, name: str) -> bool:
    """MySQL's database-level grant patterns: ``_`` and ``%`` are wildcards, ``\\_`` a literal."""
    regex = "".join(
        ".*" if ch == "%" else "." if ch == "_" else re.escape(ch[-1])
        for ch in re.findall(r"\\.|.", pattern, re.DOTALL)
    )
    return re.fullmatch(regex, name, re.DOTALL | re.IGNORECASE) is not None


def missing_privileges(grants: list[Grant], databases: list[str],
                       tables: set[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(privilege, object) pairs the reader needs and the grants do not give, e.g. ("SELECT", "`legacy`.*")."""
    held = [g for g in grants if g.kind == "privileges"]
    global_privs = {p for g in held if g.level == "global" for p in g.privileges}
    if _ALL in global_privs:
        return []
    needed = []
    if not global_privs & set(_REPLICATION):
        needed.append(("REPLICATION SLAVE", "*.*"))
    if not global_privs & set(_CLIENT):
        needed.append(("REPLICATION CLIENT", "*.*"))
    if "SELECT" not in global_privs:
        for db in databases:
            if _db_selectable(held, db, {t for d, t in tables or () if d == db}):
                continue
            needed.append(("SELECT", f"`{db}`.*"))
    return needed


def _db_selectable(held: list[Grant], db: str, tables: set[str]) -> bool:
    def gives_select(g: Grant) -> bool:
        return "SELECT" in g.privileges or g.all

    if any(g.level == "database" and _like(g.db or "", db) and gives_select(g) for g in held):
        return True
    granted_tables = {g.table for g in held if g.level == "table" and g.db == db and gives_select(g)}
    return bool(tables) and tables <= granted_tables


# --- what is too much -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Excess:
    """Privileges one grant line gives beyond what the reader needs, and how to take them back."""

    grant: Grant
    privileges: tuple[str, ...]

    @property
    def revoke(self) -> str:
        g = self.grant
        if g.kind == "role":
            return f"REVOKE {', '.join(g.roles)} FROM {g.account}"
        privileges = list(self.privileges)
        return f"REVOKE {', '.join(privileges)} ON {g.on} FROM {g.account}"

    @property
    def restore(self) -> str | None:
        """What to grant again after revoking ALL PRIVILEGES: the part of it the reader needs."""
        g = self.grant
        if not g.all or g.level not in ("global", "database", "table"):
            return None
        needed = "REPLICATION SLAVE, REPLICATION CLIENT, SELECT" if g.level == "global" else "SELECT"
        return f"GRANT {needed} ON {g.on} TO {g.account}"

    def describe(self) -> str:
        return f"{', '.join(self.privileges)} ON {self.grant.on}"


def excess_privileges(grants: list[Grant]) -> list[Excess]:
    """Per grant line, the privileges beyond :data:`ALLOWED` (``GRANT OPTION`` included)."""
    out = []
    for g in grants:
        if g.kind in ("revoke", "role"):
            continue  # a partial revoke narrows; a role grants only what the role holds (listed on its own lines)
        extra = [p for p in g.privileges if p.split(" (")[0] not in ALLOWED]
        if g.grant_option:
            extra.append("GRANT OPTION")
        if extra:
            out.append(Excess(g, tuple(extra)))
    return out


def excess_warning(user: str, excess: list[Excess]) -> str:
    """The operator's message: the user, the privileges, the REVOKE statements (and what to grant again)."""
    statements = [e.revoke for e in excess]
    restore = [e.restore for e in excess if e.restore]
    text = (f"replication user {user!r} has privileges change data capture does not need: "
            f"{'; '.join(e.describe() for e in excess)}. A leaked password of this user could change or destroy the "
            f"source; run: {'; '.join(statements)}")
    if restore:
        text += f"; then: {'; '.join(restore)}"
    return text + " (the reader needs only REPLICATION SLAVE, REPLICATION CLIENT/BINLOG MONITOR and SELECT)"
