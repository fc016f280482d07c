#!/usr/bin/env python3
"""Move the flat modules of cdc/ into one package per role (issue 21), and rewrite every reference.

Run from anywhere inside the repository, on a clean work tree:

    python3 tools/relayout.py            # git mv, new package __init__s, rewrites, contracts
    python3 tools/relayout.py --check    # exit 1 if a run would change anything (CI, after the move)

What it does, in order (every step is idempotent: a second run changes nothing):

1. ``git mv`` each entry of MOVES whose source still exists (files, and the folders ops/, commands/,
   status_page/). A flat ``cdc/*.py`` that MOVES does not name (a module added since) is reported and
   left where it is: add it to MOVES and run again.
2. Writes each role package's ``__init__.py`` (PACKAGES: what it owns, what it may import);
   ``cdc/admin/__init__.py`` (today's ``cdc/ops/__init__.py``) keeps its code and gets the new docstring.
3. Rewrites references in every tracked text file (.py .md .toml .sh .yaml .json .cfg .txt, the
   Dockerfile, .ci/run), except this script and mappings/:
   - Python imports: ``from cdc import x`` (split per new package, ``as`` keeps the local name of a
     renamed module), ``from cdc.x import ...``, ``import cdc.x``;
   - dotted names anywhere (code, strings such as monkeypatch targets and ``importlib`` names,
     docstrings, ``:mod:`` roles, docs): ``cdc.x.Name`` is rewritten only when ``Name`` is defined or
     imported at the top of the old module, so broker names that look like modules
     (``cdc.events`` the exchange, ``cdc.events.log``, ``cdc.reader.dlq``, ``cdc.schema.changes``) and
     logger names (``getLogger("cdc.reader")``) stay as they are;
   - file paths: ``cdc/reader.py``, ``cdc/_rowdecode.c``, ``cdc/ops/``, ... (docs, setup.py, deploy/, C comments).
   ``cdc.reader`` and ``cdc.snapshot`` are modules today and packages after the move: a name there is
   rewritten only when it is an attribute of the old module and not a submodule of the new package.
4. pyproject.toml: the ``packages`` list (from the tree), the import-linter contracts (between the
   markers below; the modules that import pika outside cdc.broker are listed there as known debt).
5. README.md: the ``cdc/`` row of the Layout table becomes one row per role package.
6. Deletes the stale build of the C decoder (``cdc/_rowdecode*.so``, untracked): run
   ``deploy/setup.sh`` (or ``pip install -e .``) again to build ``cdc/source/_rowdecode*.so``.

This script documents the move; delete it once the layout has landed.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parent, check=True).stdout.strip())

# old path -> new path (relative to the repository); a folder moves whole
MOVES: list[tuple[str, str]] = [
    # domain: the event, positions, canonical field types, the error tree; no I/O, nothing of cdc
    ("cdc/envelope.py", "cdc/domain/envelope.py"),
    ("cdc/checkpoint.py", "cdc/domain/positions.py"),  # Checkpoint and SinkOffset: sinks and state use them
    ("cdc/schema.py", "cdc/domain/entity_schema.py"),  # not schema_history, not schemas/
    ("cdc/errors.py", "cdc/domain/errors.py"),
    # mapping: the published contracts are derived from the mappings alone
    ("cdc/contracts.py", "cdc/mapping/contracts.py"),
    # source: the binlog stream and what it needs
    ("cdc/reader.py", "cdc/source/binlog_stream.py"),
    ("cdc/binlog_fixes.py", "cdc/source/row_decoder.py"),
    ("cdc/_rowdecode.c", "cdc/source/_rowdecode.c"),
    ("cdc/grants.py", "cdc/source/grants.py"),
    ("cdc/schema_history.py", "cdc/source/schema_history.py"),
    ("cdc/table_removal.py", "cdc/source/table_removal.py"),
    ("cdc/events.py", "cdc/source/change_events.py"),  # source transaction -> change events (not the exchange)
    # snapshot
    ("cdc/snapshot.py", "cdc/snapshot/snapshotter.py"),
    ("cdc/snapshot_chunks.py", "cdc/snapshot/chunks.py"),
    # broker
    ("cdc/publisher.py", "cdc/broker/publisher.py"),
    ("cdc/topology.py", "cdc/broker/topology.py"),
    # reader role
    ("cdc/pipeline.py", "cdc/reader/pipeline.py"),
    ("cdc/ha.py", "cdc/reader/leadership.py"),  # active/standby through the lease of state/lease.py
    # runtime
    ("cdc/config.py", "cdc/runtime/config.py"),
    ("cdc/bootstrap.py", "cdc/runtime/bootstrap.py"),
    ("cdc/daemon.py", "cdc/runtime/daemon.py"),
    ("cdc/http.py", "cdc/runtime/http.py"),
    ("cdc/monitor.py", "cdc/runtime/monitor.py"),
    ("cdc/metrics.py", "cdc/runtime/metrics.py"),
    ("cdc/health.py", "cdc/runtime/health.py"),
    ("cdc/logs.py", "cdc/runtime/logs.py"),
    ("cdc/malloc.py", "cdc/runtime/malloc.py"),
    ("cdc/tls.py", "cdc/runtime/tls.py"),
    ("cdc/nulled.py", "cdc/runtime/nulled.py"),  # counts and warns: it imports metrics, so not domain
    ("cdc/samples.py", "cdc/runtime/samples.py"),  # the status page's sample rings (branch fix-console)
    ("cdc/status_page", "cdc/runtime/status_page"),
    # admin (was ops: not to be read as topology.OPS, the c/u/d operations)
    ("cdc/ops", "cdc/admin"),
    # cli: `python -m cdc.cli` keeps working (cdc/cli/__main__.py); the entry point becomes cdc.cli.root:main
    ("cdc/cli.py", "cdc/cli/root.py"),
    ("cdc/commands", "cdc/cli/commands"),
]

STAYS = {"cdc/__init__.py"}  # flat files that belong where they are
KEEP_PACKAGES = ("cdc/mapping", "cdc/consumer", "cdc/demo")

PACKAGES: dict[str, str] = {
    "cdc/domain": (
        "The domain: the change event and its envelope (ids, versions, encoding), positions in the source's\n"
        "history (Checkpoint, SinkOffset), the canonical field types of an entity and the error tree with its\n"
        "recovery text. Pure values, no I/O. It imports nothing of cdc: every other package may import it."
    ),
    "cdc/source": (
        "The binlog source: the stream reader (connection, GTIDs, transactions, ticks), the row decoder and\n"
        "its C extension, the start-up checks of the server and of the replication user's grants, the\n"
        "schema history and the DDL that empties tables, and the step from a source transaction to change\n"
        "events. It may import cdc.domain, cdc.mapping and cdc.runtime's config, tls and metrics, and\n"
        "cdc.broker for the schema-change queue; never cdc.reader, cdc.snapshot, cdc.admin or cdc.cli."
    ),
    "cdc/snapshot": (
        "Snapshots: chunked, lock-free reads of a table beside the binlog stream, the chunk workers, their\n"
        "progress in the state store and the resume after a crash. It may import cdc.domain, cdc.mapping,\n"
        "cdc.source, cdc.broker (to publish chunks), cdc.state and cdc.runtime's config and metrics; never\n"
        "cdc.reader, cdc.admin or cdc.cli."
    ),
    "cdc/broker": (
        "Everything RabbitMQ: the topology (exchanges, queues, dead-letter routes, the event-log stream),\n"
        "message grouping and batch headers, confirm tracking, the publisher and its in-memory twin, frame\n"
        "encoding. This is the package that imports pika (pyproject's import contracts list the modules\n"
        "outside it that still do). It may import cdc.domain and cdc.runtime.tls; nothing above it."
    ),
    "cdc/reader": (
        "The reader role: read a source transaction, map it, publish it, move the checkpoint only to\n"
        "transaction boundaries the broker confirmed; operator position requests, reader dead letters and\n"
        "the active/standby leadership through the state store's lease. It may import cdc.domain,\n"
        "cdc.mapping, cdc.source, cdc.snapshot, cdc.broker, cdc.state and cdc.runtime's config, tls and\n"
        "metrics; never cdc.cli."
    ),
    "cdc/runtime": (
        "The runtime: configuration (one root model, environment overrides), the composition root that\n"
        "builds every collaborator (bootstrap), the daemon and its role threads, the HTTP server (metrics,\n"
        "health, admin API, status page), the monitor, logs with secret masking, malloc tuning and TLS\n"
        "helpers. Its top modules (bootstrap, daemon, http, monitor) may import every role package; its\n"
        "leaf modules (config, tls, metrics, logs, health, malloc, nulled) import only cdc.domain, the sink\n"
        "registry and the state store. Never cdc.cli."
    ),
    "cdc/admin": None,  # today's cdc/ops/__init__.py: its docstring is replaced, its code stays
    "cdc/cli": (
        "The `cdc` command: the Typer app (cdc.cli.root) and one module per subcommand in cdc.cli.commands,\n"
        "each defining ``register(app)``. Commands parse arguments, call cdc.admin, cdc.runtime and the\n"
        "role packages, and map errors to exit codes; nothing imports cdc.cli."
    ),
}

ADMIN_DOC = (
    "The operator's toolkit behind `cdc status | offsets | replay | dlq | verify`.\n\n"
    "Each module holds the logic of one command and no CLI code, so that the admin HTTP API can call\n"
    "the same functions; it may import the role packages, cdc.runtime's config and cdc.state, never\n"
    "cdc.cli. Operator mistakes raise the errors below; the CLI maps them to exit codes:\n\n"
    "    0  success                      3  verify found differences\n"
    "    1  a service failed or refused   4  refused: a running daemon owns that position (lease)\n"
    "    2  bad usage or configuration    5  position not usable (malformed, not in the binlog, purged)\n"
)

CLI_MAIN = '"""`python -m cdc.cli`: the `cdc` command."""\n\nfrom cdc.cli.root import main\n\nmain()\n'

README_LAYOUT_ROWS = """\
| `cdc/domain/` | the change event and its envelope, versions, positions (`Checkpoint`, `SinkOffset`), canonical field types, the error tree; imports nothing of `cdc` |
| `cdc/mapping/` | the mapping language: legacy row -> canonical event, pure; the published contracts (JSON Schema, AsyncAPI) |
| `cdc/source/` | the binlog stream, the row decoder (in C: `cdc/source/_rowdecode.c`, built by `setup.py` at install), server checks and grants, schema history, source transaction -> change events |
| `cdc/snapshot/` | chunked lock-free snapshots, their workers and progress |
| `cdc/broker/` | everything RabbitMQ: topology, message grouping, confirms, the publisher |
| `cdc/reader/` | the reader role: read -> map -> publish -> checkpoint, position requests, active/standby leadership |
| `cdc/runtime/` | config, the composition root (`bootstrap.py`), the daemon, HTTP server and status page, monitor, metrics, logs |
| `cdc/admin/` | the operator's toolkit behind status, offsets, replay, DLQ, verify |
| `cdc/cli/` | the `cdc` command, one module per subcommand in `cdc/cli/commands/` |
| `cdc/consumer/`, `cdc/demo/` | the subscription library for downstream consumers; the demo source |
"""

TEXT_SUFFIXES = {".c", ".h", ".py", ".md", ".toml", ".sh", ".yaml", ".yml", ".json", ".cfg", ".txt", ".ini", ".html"}
TEXT_NAMES = {"Dockerfile", "run"}
SKIP_PREFIXES = ("mappings/", "tools/relayout.py")

# Bare names (no attribute after them) that are not rewritten outside imports and :mod: roles: names of
# exchanges and queues that look like modules, and the modules that become packages of the same name.
# Logger names (getLogger("cdc.x"), caplog's logger="cdc.x") are never rewritten: operators filter on them.
AMBIGUOUS_BARE = {"cdc.events", "cdc.schema", "cdc.reader", "cdc.snapshot", "cdc.cli", "cdc.consumer"}

CONTRACTS_BEGIN = "# >>> import contracts (written by tools/relayout.py)"
CONTRACTS_END = "# <<< import contracts"

ROLE_PACKAGES = ["cdc.domain", "cdc.mapping", "cdc.source", "cdc.snapshot", "cdc.broker", "cdc.reader",
                 "cdc.runtime", "cdc.admin", "cdc.cli", "cdc.consumer", "cdc.demo", "cdc.sinks", "cdc.state"]


def git(*args: str, check: bool = True) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=check).stdout


def tracked(path: str) -> bool:
    return bool(git("ls-files", "--", path).strip())


def dotted(path: str) -> str:
    p = path[:-3] if path.endswith(".py") else path[:-2] if path.endswith(".c") else path
    return p.replace("/", ".")


def top_level_names(path: Path) -> set[str]:
    """Names a module defines or imports at its top level: what `cdc.x.Name` can mean."""
    names: set[str] = set()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return names
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` / try-imports
            for sub in node.body:
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    for alias in sub.names:
                        names.add((alias.asname or alias.name).split(".")[0])
    names.discard("annotations")
    return names


class Renames:
    """Old dotted module -> new, with what each old module held."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}  # file modules
        self.folders: dict[str, str] = {}  # packages moved whole: prefix rewrite
        self.attrs: dict[str, set[str]] = {}
        self.paths: list[tuple[re.Pattern[str], str]] = []
        for old, new in MOVES:
            if old.endswith((".py", ".c")):
                self.modules[dotted(old)] = dotted(new)
                src = ROOT / old if (ROOT / old).exists() else ROOT / new
                self.attrs[dotted(old)] = top_level_names(src) if old.endswith(".py") else set()
                stem_old, stem_new = old.rsplit(".", 1)[0], new.rsplit(".", 1)[0]
                # cdc/reader.py, cdc/_rowdecode.c, and the regex cdc/_rowdecode\..*\.so in a test
                self.paths.append((re.compile(rf"(?<![\w.-]){re.escape(stem_old)}(?=\\?\.)"), stem_new))
            else:
                self.folders[dotted(old)] = dotted(new)
                self.paths.append((re.compile(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])"), new))
        # a module that becomes a package of the same name: its new submodules are not old attributes
        self.collisions: dict[str, set[str]] = {}
        for old in self.modules:
            new_pkg = ROOT / old.replace(".", "/")
            subs = {new.rsplit("/", 1)[1].rsplit(".", 1)[0] for _, new in MOVES
                    if new.startswith(old.replace(".", "/") + "/")}
            if subs or new_pkg.is_dir():
                self.collisions[old] = subs | {p.stem for p in new_pkg.glob("*.py")}
        self.keep_bare = set(AMBIGUOUS_BARE)

    def longest(self, name: str) -> tuple[str, str] | None:
        """The old module or folder that `name` starts with, longest first."""
        parts = name.split(".")
        for i in range(len(parts), 1, -1):
            prefix = ".".join(parts[:i])
            if prefix in self.modules:
                return prefix, "module"
            if prefix in self.folders:
                return prefix, "folder"
        return None

    def attr_is_old(self, module: str, attr: str) -> bool:
        if attr in self.collisions.get(module, set()):
            return False  # cdc.reader.pipeline: already the new package
        return attr in self.attrs.get(module, set()) or (attr.startswith("__") and attr.endswith("__"))

    def rewrite_dotted(self, name: str, *, bare_ok: bool) -> str:
        hit = self.longest(name)
        if hit is None:
            return name
        prefix, kind = hit
        rest = name[len(prefix):]
        if kind == "folder":
            return self.folders[prefix] + rest
        if not rest:
            if bare_ok and not (prefix in self.collisions and not self.moving(prefix)):
                return self.modules[prefix]
            return name
        if self.attr_is_old(prefix, rest[1:].split(".")[0]):
            return self.modules[prefix] + rest
        return name

    def moving(self, module: str) -> bool:
        """True while the old file still exists (this run moves it)."""
        return any(dotted(old) == module and tracked(old) for old, _ in MOVES) or module in self.moved_now

    moved_now: set[str] = set()


LOGGER_CONTEXT = re.compile(r"(getLogger\(\s*|logger\s*=\s*)[\"']$")
ENTRY_POINT = re.compile(r"(?<![\w.])(cdc(?:\.\w+)+):(\w+)")
DOTTED = re.compile(r"(?<![\w.])cdc(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from[ \t]+(?P<mod>cdc(?:\.\w+)*)[ \t]+import[ \t]+"
                         r"(?P<names>\([^)]*\)|[^\n]*)", re.M)
PLAIN_IMPORT = re.compile(r"^(?P<indent>[ \t]*)import[ \t]+(?P<mods>cdc(?:\.\w+)*(?:[ \t]+as[ \t]+\w+)?"
                          r"(?:[ \t]*,[ \t]*[\w.]+(?:[ \t]+as[ \t]+\w+)?)*)", re.M)


def parse_names(text: str) -> tuple[list[tuple[str, str | None]], str]:
    """`a, b as c  # comment` -> [(a, None), (b, c)], trailing comment."""
    comment = ""
    body = text.strip()
    if body.startswith("("):
        body = body[1:-1]
        body = "\n".join(line.split("#", 1)[0] for line in body.splitlines())
    elif "#" in body:
        body, comment = body.split("#", 1)
        comment = "  #" + comment.rstrip()
    out: list[tuple[str, str | None]] = []
    for item in body.replace("\n", " ").split(","):
        item = item.strip()
        if not item:
            continue
        if " as " in item:
            name, alias = (s.strip() for s in item.split(" as ", 1))
            out.append((name, alias))
        else:
            out.append((item, None))
    return out, comment


def rewrite_from_cdc(m: re.Match[str], r: Renames) -> str:
    """`from cdc import metrics, binlog_fixes` -> one line per new package, local names kept."""
    names, comment = parse_names(m["names"])
    groups: dict[str, list[str]] = {}
    changed = False
    for name, alias in names:
        old = f"cdc.{name}"
        if old in r.modules and not (old in r.collisions and not r.moving(old)):
            new = r.modules[old]
        elif old in r.folders:
            new = r.folders[old]
        else:
            new = old
        changed |= new != old
        parent, leaf = new.rsplit(".", 1)
        local = alias or name
        groups.setdefault(parent, []).append(leaf if leaf == local else f"{leaf} as {local}")
    if not changed:
        return m.group(0)
    lines = [f"{m['indent']}from {parent} import {', '.join(items)}" for parent, items in groups.items()]
    return "\n".join(lines) + comment


def rewrite_from(m: re.Match[str], r: Renames) -> str:
    mod = m["mod"]
    if mod == "cdc":
        return rewrite_from_cdc(m, r)
    hit = r.longest(mod)
    if hit is None:
        return m.group(0)
    prefix, kind = hit
    if kind == "module":
        if mod != prefix:
            return m.group(0)
        names = [n for n, _ in parse_names(m["names"])[0]]
        if prefix in r.collisions:
            if names and all(n in r.collisions[prefix] for n in names):
                return m.group(0)  # from cdc.reader import pipeline: the new package
            if not r.moving(prefix) and not all(n in r.attrs[prefix] for n in names):
                return m.group(0)
        new = r.modules[prefix]
    else:
        new = r.folders[prefix] + mod[len(prefix):]
    return f"{m['indent']}from {new} import {m['names']}"


def rewrite_plain_import(m: re.Match[str], r: Renames) -> str:
    parts = []
    for item in m["mods"].split(","):
        item = item.strip()
        name, _, alias = item.partition(" as ")
        name = name.strip()
        new = r.rewrite_dotted(name, bare_ok=True) if name.startswith("cdc.") else name
        parts.append(new + (f" as {alias.strip()}" if alias else ""))
    return f"{m['indent']}import {', '.join(parts)}"


def rewrite_text(text: str, r: Renames, *, python: bool) -> str:
    protected: list[tuple[int, int, str]] = []
    if python:
        for rx, fn in ((FROM_IMPORT, rewrite_from), (PLAIN_IMPORT, rewrite_plain_import)):
            for m in rx.finditer(text):
                if any(s <= m.start() < e for s, e, _ in protected):
                    continue
                protected.append((m.start(), m.end(), fn(m, r)))
        protected.sort()
    out: list[str] = []
    pos = 0
    for start, end, repl in protected + [(len(text), len(text), "")]:
        out.append(_rewrite_free(text[pos:start], r))
        out.append(repl)
        pos = end
    return "".join(out)


def _rewrite_free(text: str, r: Renames) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(0)
        trail = ""
        while name.endswith("."):
            name, trail = name[:-1], "." + trail
        before = text[max(0, m.start() - 24):m.start()]
        if LOGGER_CONTEXT.search(before):
            return m.group(0)  # a logger's name is what operators see and filter on: it stays
        is_mod_role = before.endswith((":mod:`", ":mod:`~"))
        if name in r.keep_bare and not is_mod_role:
            return m.group(0)  # an exchange or queue name, or a module that is now a package
        return r.rewrite_dotted(name, bare_ok=True) + trail

    def entry(m: re.Match[str]) -> str:  # an entry point, module:attr
        new = r.rewrite_dotted(f"{m[1]}.{m[2]}", bare_ok=False)
        return ":".join(new.rsplit(".", 1))

    text = ENTRY_POINT.sub(entry, text)
    text = DOTTED.sub(sub, text)
    for rx, new in r.paths:
        text = rx.sub(new, text)
    return text


def read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def tracked_text_files() -> list[Path]:
    files = []
    for rel in git("ls-files", "-z").split("\0"):
        if not rel or rel.startswith(SKIP_PREFIXES):
            continue
        p = ROOT / rel
        if (p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES) and p.is_file():
            files.append(p)
    return sorted(files)


class Run:
    def __init__(self, check: bool) -> None:
        self.check = check
        self.changed: list[str] = []

    def write(self, path: Path, text: str) -> None:
        old = read(path) if path.exists() else None
        if old == text:
            return
        self.changed.append(str(path.relative_to(ROOT)))
        if not self.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            git("add", str(path.relative_to(ROOT)))

    def move(self, old: str, new: str) -> None:
        src, dst = ROOT / old, ROOT / new
        if not tracked(old):  # gone, or only untracked leftovers such as __pycache__/
            return
        if dst.exists() and src.is_file():
            sys.exit(f"relayout: both {old} and {new} exist; merge them by hand first")
        self.changed.append(f"{old} -> {new}")
        if self.check:
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and dst.exists():  # a folder moved before; files added to the old one since
            for f in sorted(git("ls-files", old).split()):
                target = ROOT / new / Path(f).relative_to(old)
                target.parent.mkdir(parents=True, exist_ok=True)
                git("mv", f, str(target.relative_to(ROOT)))
        else:
            git("mv", old, new)


def package_init_text(pkg: str, current: str | None) -> str:
    if pkg == "cdc/admin":
        doc = ADMIN_DOC
    else:
        doc = PACKAGES[pkg].rstrip("\n") + "\n"
    body = f'"""{doc}"""\n'
    if current is not None:
        tree = ast.parse(current)
        first = tree.body[0] if tree.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            rest = "".join(current.splitlines(keepends=True)[first.end_lineno:])
            return body + ("\n" + rest.lstrip("\n") if rest.strip() else "")
        return body + "\n" + current
    return body


def python_packages() -> list[str]:
    pkgs = set()
    for base, name in (("cdc", "cdc"), ("sinks", "cdc.sinks"), ("state", "cdc.state")):
        for init in (ROOT / base).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(ROOT / base)
            pkgs.add(name if str(rel) == "." else name + "." + ".".join(rel.parts))
    return sorted(pkgs, key=lambda p: (p != "cdc", p))


def pika_importers() -> list[str]:
    """Modules outside cdc.broker that import pika directly (the debt the contract lists)."""
    out = []
    for base, name in (("cdc", "cdc"), ("sinks", "cdc.sinks"), ("state", "cdc.state")):
        for p in sorted((ROOT / base).rglob("*.py")):
            mod = name + "." + ".".join(p.relative_to(ROOT / base).with_suffix("").parts)
            mod = mod.removesuffix(".__init__")
            if mod.startswith("cdc.broker"):
                continue
            if re.search(r"^\s*(import pika|from pika[\s.])", p.read_text(encoding="utf-8"), re.M):
                out.append(mod)
    return out


def contracts_block() -> str:
    def lst(items: list[str], indent: str = "    ") -> str:
        return "[\n" + "".join(f'{indent}"{i}",\n' for i in items) + "]"

    others = lambda *keep: [p for p in ROLE_PACKAGES if p not in keep]  # noqa: E731
    pika_debt = [f"{m} -> pika" for m in pika_importers()]
    return f"""{CONTRACTS_BEGIN}
# tests/unit/test_layout.py checks these (sinks/ and state/ are installed as cdc.sinks and cdc.state, so it
# lints a copy of the tree in which they sit inside cdc/). Re-written by tools/relayout.py.
[tool.importlinter]
root_packages = ["cdc"]
include_external_packages = true

[[tool.importlinter.contracts]]
name = "cdc.domain imports nothing of cdc"
type = "forbidden"
source_modules = ["cdc.domain"]
forbidden_modules = {lst(others("cdc.domain"))}

[[tool.importlinter.contracts]]
name = "cdc.mapping (pure) imports only cdc.domain"
type = "forbidden"
source_modules = ["cdc.mapping"]
forbidden_modules = {lst(others("cdc.domain", "cdc.mapping"))}
# Known debt: projections apply the mappings to a sink's config (a lazy import); it belongs with bootstrap.
ignore_imports = ["cdc.mapping.projections -> cdc.sinks.search_mapping"]

[[tool.importlinter.contracts]]
name = "only cdc.broker imports pika"
type = "forbidden"
source_modules = {lst(others("cdc.broker"))}
forbidden_modules = ["pika"]
allow_indirect_imports = true
# Known debt, to move behind cdc.broker (issue 21): the modules that import pika directly today.
ignore_imports = {lst(pika_debt)}

[[tool.importlinter.contracts]]
name = "sinks and the state store do not import the reader role, admin or the CLI"
type = "forbidden"
source_modules = ["cdc.sinks", "cdc.state"]
forbidden_modules = ["cdc.reader", "cdc.admin", "cdc.cli", "cdc.snapshot", "cdc.source"]

[[tool.importlinter.contracts]]
name = "nothing imports the CLI"
type = "forbidden"
source_modules = {lst(others("cdc.cli"))}
forbidden_modules = ["cdc.cli"]

[[tool.importlinter.contracts]]
name = "the broker and the source do not import the roles that use them"
type = "forbidden"
source_modules = ["cdc.broker", "cdc.source"]
forbidden_modules = ["cdc.reader", "cdc.snapshot", "cdc.admin", "cdc.cli", "cdc.runtime.bootstrap", "cdc.runtime.daemon"]

[[tool.importlinter.contracts]]
name = "the consumer library stands alone"
type = "forbidden"
source_modules = ["cdc.consumer"]
forbidden_modules = ["cdc.reader", "cdc.snapshot", "cdc.source", "cdc.admin", "cdc.cli", "cdc.sinks", "cdc.runtime.bootstrap", "cdc.runtime.daemon"]
{CONTRACTS_END}
"""


IMPORT_LINTER_PIN = '    "import-linter==2.16",  # tests/unit/test_layout.py: the import contracts below\n'


def update_pyproject(run: Run) -> None:
    path = ROOT / "pyproject.toml"
    text = read(path)
    if '"import-linter' not in text:  # the test extra: its list starts `test = [`
        text = re.sub(r"^(test = \[\n)", lambda m: m[1] + IMPORT_LINTER_PIN, text, count=1, flags=re.M)
    pkgs = ", ".join(f'"{p}"' for p in python_packages())
    text = re.sub(r"^packages = \[[^\]]*\]", lambda _: f"packages = [{pkgs}]", text, count=1, flags=re.M)
    block = contracts_block()
    if CONTRACTS_BEGIN in text:
        text = re.sub(re.escape(CONTRACTS_BEGIN) + r".*?" + re.escape(CONTRACTS_END) + r"\n", lambda _: block,
                      text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    run.write(path, text)


def update_readme(run: Run) -> None:
    path = ROOT / "README.md"
    if not path.exists():
        return
    lines = read(path).splitlines(keepends=True)
    out = []
    for line in lines:
        if line.startswith("| `cdc/` |"):
            out.append(README_LAYOUT_ROWS)
        else:
            out.append(line)
    run.write(path, "".join(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a run would")
    args = ap.parse_args()
    run = Run(args.check)

    if not args.check and git("status", "--porcelain", "--untracked-files=no").strip():
        print("relayout: the work tree has uncommitted changes; commit or stash them first", file=sys.stderr)
        return 2

    renames = Renames()  # read the old modules before moving them
    moved = {dotted(old) for old, _ in MOVES if tracked(old)}
    Renames.moved_now = moved

    known = {old for old, _ in MOVES} | STAYS
    for p in sorted((ROOT / "cdc").glob("*.py")):
        rel = str(p.relative_to(ROOT))
        if rel not in known and git("ls-files", rel).strip():
            print(f"relayout: WARNING {rel} is not in MOVES; it stays in cdc/ (add it to MOVES and run again)",
                  file=sys.stderr)

    for old, new in MOVES:
        run.move(old, new)

    for pkg in PACKAGES:
        init = ROOT / pkg / "__init__.py"
        if not (ROOT / pkg).exists() and args.check:
            run.changed.append(str(init.relative_to(ROOT)))
            continue
        current = read(init) if init.exists() else None
        run.write(init, package_init_text(pkg, current if pkg == "cdc/admin" else None))
    if (ROOT / "cdc/cli").exists():
        run.write(ROOT / "cdc/cli/__main__.py", CLI_MAIN)

    for path in tracked_text_files():
        if not path.exists():
            continue
        text = read(path)
        new = rewrite_text(text, renames, python=path.suffix == ".py")
        if new != text:
            run.write(path, new)

    update_pyproject(run)
    update_readme(run)
    gitignore = ROOT / ".gitignore"
    if gitignore.exists():  # the C decoder now builds into cdc/source/
        run.write(gitignore, re.sub(r"^cdc/\*\.so$", "cdc/**/*.so", read(gitignore), flags=re.M))

    if not args.check:
        for so in sorted((ROOT / "cdc").glob("_rowdecode*.so")):
            so.unlink()
            print(f"relayout: removed the stale build {so.relative_to(ROOT)}; run deploy/setup.sh (or "
                  "pip install -e .) to build cdc/source/_rowdecode", file=sys.stderr)

    for line in run.changed:
        print(("would change " if args.check else "changed ") + line)
    if not run.changed:
        print("relayout: nothing to do")
    return 1 if (args.check and run.changed) else 0


if __name__ == "__main__":
    sys.exit(main())
