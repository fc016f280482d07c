"""Create the demo `legacy` schema and fill it with deterministic, realistic data.

    python -m cdc.demo.seed --members 1000            # drop + create tables, then seed
    python -m cdc.demo.seed --members 500 --no-schema # append to existing tables

Connection defaults come from the environment (see `ConnParams.from_env`). Every session runs with
`sql_mode=''` because the legacy data relies on zero dates and silent truncation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import sys
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

ZERO_DATE = "0000-00-00"
ZERO_DATETIME = "0000-00-00 00:00:00"
SEED_NOW = dt.datetime(2024, 6, 30, 12, 0, 0)

TABLES = (
    "membership_types", "chapters", "members", "events", "event_registrations", "certifications",
    "member_certifications", "ce_credits", "orders", "order_items", "payments",
)


@dataclass(frozen=True)
class ConnParams:
    host: str = "127.0.0.1"
    port: int = 3307
    user: str = "legacy"
    password: str = "legacy-secret"
    database: str = "legacy"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConnParams:
        """CDC_DEMO__DSN (mysql://user:pw@host:port/db) wins; otherwise CDC_SOURCE__HOST/PORT with
        CDC_DEMO__USER/PASSWORD/DATABASE (defaults legacy/legacy-secret/legacy)."""
        env = os.environ if env is None else env
        if env.get("CDC_DEMO__DSN"):
            return cls.from_dsn(env["CDC_DEMO__DSN"])
        return cls(
            host=env.get("CDC_SOURCE__HOST", cls.host),
            port=int(env.get("CDC_SOURCE__PORT", cls.port)),
            user=env.get("CDC_DEMO__USER", cls.user),
            password=env.get("CDC_DEMO__PASSWORD", cls.password),
            database=env.get("CDC_DEMO__DATABASE", cls.database),
        )

    @classmethod
    def from_dsn(cls, dsn: str) -> ConnParams:
        url = urlsplit(dsn)
        if url.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
            raise ValueError(f"not a mysql:// DSN: {url.scheme}://...")
        return cls(
            host=url.hostname or cls.host,
            port=url.port or cls.port,
            user=unquote(url.username) if url.username else cls.user,
            password=unquote(url.password) if url.password is not None else cls.password,
            database=url.path.lstrip("/") or cls.database,
        )

    def __repr__(self) -> str:
        return f"ConnParams(host={self.host!r}, port={self.port}, user={self.user!r}, password='***', database={self.database!r})"


def params_from_env(env: Mapping[str, str] | None = None) -> ConnParams:
    return ConnParams.from_env(env)


def as_params(params: ConnParams | Mapping[str, Any]) -> ConnParams:
    return params if isinstance(params, ConnParams) else ConnParams(**params)


def connect(params: ConnParams | Mapping[str, Any], *, autocommit: bool = False) -> pymysql.Connection:
    p = as_params(params)
    try:
        return pymysql.connect(
            host=p.host, port=int(p.port), user=p.user, password=p.password, database=p.database,
            charset="utf8mb4", autocommit=autocommit, init_command="SET SESSION sql_mode=''",
            connect_timeout=5, read_timeout=120, write_timeout=120,
        )
    except pymysql.err.OperationalError as exc:
        raise ConnectionError(
            f"cannot connect to the demo source {p!r}: {exc}. Is it running? (deploy/dev-services.sh up)"
        ) from exc


def schema_statements() -> list[str]:
    text = resources.files("cdc.demo").joinpath("schema.sql").read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [stmt.strip() for stmt in re.split(r";\s*$", body, flags=re.M) if stmt.strip()]


def create_schema(params: ConnParams | Mapping[str, Any]) -> None:
    """Drop and recreate every demo table (the database itself must exist)."""
    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            for stmt in schema_statements():
                cur.execute(stmt)
    finally:
        conn.close()


# --- reference data -------------------------------------------------------------------------------

MEMBERSHIP_TYPES = [  # code, label, annual_fee, is_active
    ("REG", "Regular Member", "195.00", 1),
    ("STU", "Student Member", "45.00", 1),
    ("RET", "Retired Member", "95.00", 1),
    ("FEL", "Fellow", "295.00", 1),
    ("LIFE", "Life Member", "0.00", 1),
    ("CORP", "Corporate Member", "1200.00", 1),
    ("ASSOC", "Associate (discontinued 2011)", "150.00", 0),
]
MEMBERSHIP_FEES = {i + 1: Decimal(fee) for i, (_, _, fee, _) in enumerate(MEMBERSHIP_TYPES)}

CHAPTERS = [  # code, name (latin1), region, country
    ("NYC", "New York Metro", "Northeast", "US"), ("BOS", "Boston", "Northeast", "US"),
    ("CHI", "Chicago", "Midwest", "US"), ("SFO", "San Francisco Bay Area", "West", "US"),
    ("TOR", "Toronto", "Canada", "CA"), ("MTL", "Montréal", "Canada", "CA"),
    ("QUE", "Québec", "Canada", "CA"), ("LON", "London", "Europe", "GB"),
    ("PAR", "Paris Île-de-France", "Europe", "FR"), ("MUC", "München", "Europe", "DE"),
    ("ZRH", "Zürich", "Europe", "CH"), ("SAO", "São Paulo", "LatAm", "BR"),
]

CERTIFICATIONS = [  # code, name, issuing body, validity months (0 = lifetime), required credits
    ("CAP", "Certified Association Professional", "Professional Certification Board", 36, "40.00"),
    ("CAP-S", "Certified Association Professional - Senior", "Professional Certification Board", 36, "60.00"),
    ("CEMP", "Certified Event Management Professional", "Events Council", 24, "30.00"),
    ("CGOV", "Certificate in Nonprofit Governance", "Governance Institute", 0, "0.00"),
    ("CDPP", "Certified Data Privacy Practitioner", "Privacy Board", 24, "20.00"),
    ("CFRE", "Certified Fundraising Executive", "Fundraising Council", 36, "80.00"),
    ("ETH", "Ethics Foundation Certificate", "Professional Certification Board", 0, "0.00"),
    ("LDR", "Leadership Certificate", "Leadership Academy", 60, "25.00"),
]

PRODUCTS = [  # sku, description (latin1), price
    ("BK-ETH-2E", "Code of Ethics handbook (2nd éd.)", "29.95"),
    ("BK-GOV", "Governance Handbook", "45.00"),
    ("MUG-LOGO", "Association mug", "12.50"),
    ("PIN-GOLD", "Gold lapel pin", "8.00"),
    ("JRNL-SUB", "Journal subscription (12 issues)", "79.00"),
    ("DON-FND", "Donation to the Foundation", "50.00"),
    ("REC-CE", "Continuing-education transcript", "15.00"),
]

FIRST_NAMES = [
    "Zoë", "François", "José", "Søren", "Chloé", "Hélène", "Björn", "Renée", "Jürgen", "Anaïs", "Noël",
    "Mónica", "Siobhán", "Åsa", "Raphaël", "Ingrid", "Ana", "John", "Mary", "Patrick", "Linda", "James",
    "Wei", "Priya", "Mohammed", "Olga", "David", "Sarah", "Michael", "Jennifer", "Robert", "Aisha",
    "Carlos", "Emily", "Thomas", "Grace", "Daniel", "Laura", "Kevin", "Nicole",
]
LAST_NAMES = [
    "Müller", "Dubois", "García", "Schäfer", "O'Brien", "Núñez", "Lefèvre", "Brontë", "Øvergård",
    "Gonçalves", "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson",
    "Taylor", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Lopez", "Lee", "Nguyen", "Patel",
    "Kowalski", "Van der Berg", "MacDonald", "Rossi", "Tanaka", "Kim", "Chen", "Singh", "Cohen", "Novak",
]
STREETS = ["Main St", "Rue Saint-Honoré", "Königstraße", "Avenida Paulista", "Bahnhofstrasse",
           "Chemin de la Côte-des-Neiges", "Oak Avenue", "King Street West", "Elm Road", "Park Lane"]
CITIES = {"US": ["New York", "Boston", "Chicago", "San José", "Oakland"], "CA": ["Toronto", "Montréal", "Québec"],
          "GB": ["London", "Reading"], "FR": ["Paris", "Orléans"], "DE": ["München", "Köln"],
          "CH": ["Zürich", "Genève"], "BR": ["São Paulo", "Niterói"]}
EMAIL_DOMAINS = ["gmail.com", "Yahoo.com", "hotmail.com", "outlook.com", "example.org", "Example.COM",
                 "acme-corp.com", "members.assoc.org", "uni.edu"]
ACTIVITIES = [
    "Webinar: Data privacy for associations", "Séminaire: Gouvernance et éthique", "Annual Conference sessions",
    "Workshop: Führung im Ehrenamt", "Self-study: Board governance module", "Peer mentoring (Café des pros)",
    "Article published in the Journal", "Volunteer committee service", "Course: Strategic planning",
]
EVENT_TITLES = {
    "conference": ["{year} Annual Conference - {city}", "{year} Leadership Summit", "Congrès annuel {year} - {city}"],
    "webinar": ["Webinar: Membership growth strategies", "Webinar: GDPR & données personnelles",
                "Webinar: Financial reporting for nonprofits", "Webinar: Volunteer engagement"],
    "workshop": ["Workshop: Board governance", "Atelier: Négociation", "Workshop: Certification exam prep"],
    "meetup": ["{city} chapter meetup", "Apéro networking - {city}", "{city} members' breakfast"],
}
MEMBER_STATUSES = ("A", "P", "L", "S", "X")
MEMBER_STATUS_WEIGHTS = (70, 8, 15, 4, 3)


# --- row factories (shared with the workload) -------------------------------------------------------

def ascii_fold(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.replace("ø", "o").replace("Ø", "O"))
    return re.sub(r"[^A-Za-z0-9]", "", folded.encode("ascii", "ignore").decode())


def random_datetime(rng: random.Random, start: dt.datetime, end: dt.datetime) -> dt.datetime:
    span = max(0, int((end - start).total_seconds()))
    return start + dt.timedelta(seconds=rng.randint(0, span))


def messy_email(rng: random.Random, first: str, last: str) -> str:
    local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{last}{rng.randint(1, 99)}",
                        f"{last}.{first}"])
    local = ".".join(ascii_fold(part) for part in local.split("."))
    style = rng.random()
    if style < 0.5:
        local = local.lower()
    elif style < 0.6:
        local = local.upper()
    email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    if rng.random() < 0.1:
        email = f"{' ' * rng.randint(1, 2)}{email}{' ' * rng.randint(0, 2)}"
    return email


def messy_phone(rng: random.Random) -> str | None:
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([f"({a}) {b}-{c:04d}", f"+1 {a} {b} {c:04d}", f"{a}.{b}.{c:04d}", f"{a}{b}{c:04d}", "", None])


def member_row(rng: random.Random, now: dt.datetime) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    chapter_id = rng.randint(1, len(CHAPTERS))
    country = CHAPTERS[chapter_id - 1][3]
    status = rng.choices(MEMBER_STATUSES, MEMBER_STATUS_WEIGHTS)[0]
    joined = random_datetime(rng, dt.datetime(1995, 1, 1), now)
    birth = dt.date(rng.randint(1940, 2003), rng.randint(1, 12), rng.randint(1, 28))
    r = rng.random()
    birth_date = birth.strftime("%d/%m/%Y") if r < 0.8 else ("" if r < 0.9 else (None if r < 0.99 else "00/00/0000"))
    is_active = int(status in ("A", "P"))
    if rng.random() < 0.02:  # the legacy code never kept these two in sync
        is_active = 1 - is_active
    return {
        "email": messy_email(rng, first, last),
        "first_name": first,
        "last_name": last,
        "address": None if rng.random() < 0.1 else f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
        "city": rng.choice(CITIES[country]),
        "country": country,
        "phone": messy_phone(rng),
        "birth_date": birth_date,
        "member_type_id": rng.choices(range(1, len(MEMBERSHIP_TYPES) + 1), (60, 12, 8, 6, 3, 4, 7))[0],
        "chapter_id": chapter_id,
        "status": status,
        "is_active": is_active,
        "newsletter_optin": int(rng.random() < 0.4),
        "join_date": ZERO_DATE if rng.random() < 0.03 else joined.date(),
        "last_login": ZERO_DATETIME if rng.random() < 0.15 else random_datetime(rng, joined, now),
        "created": joined,
        "modified": joined,
        "balance": Decimal(rng.choice([0, 0, 0, 0, rng.randint(-50000, 50000)])) / 100,
        "points": rng.randint(0, 5000),
        "deleted": int(rng.random() < 0.03),
    }


def event_row(rng: random.Random, now: dt.datetime) -> dict[str, Any]:
    event_type = rng.choices(("conference", "webinar", "workshop", "meetup"), (10, 45, 25, 20))[0]
    chapter_id = rng.randint(1, len(CHAPTERS))
    city = CHAPTERS[chapter_id - 1][1]
    start = random_datetime(rng, now - dt.timedelta(days=730), now + dt.timedelta(days=365)).replace(minute=0, second=0)
    duration = {"conference": dt.timedelta(days=rng.randint(1, 3)), "webinar": dt.timedelta(minutes=90),
                "workshop": dt.timedelta(hours=6), "meetup": dt.timedelta(hours=2)}[event_type]
    price = {"conference": rng.choice(["495.00", "795.00", "1295.00"]), "webinar": rng.choice(["0.00", "0.00", "49.00"]),
             "workshop": rng.choice(["150.00", "295.00"]), "meetup": "0.00"}[event_type]
    capacity = {"conference": rng.randint(300, 3000), "webinar": rng.choice([500, 1000, 60000]),
                "workshop": rng.randint(15, 40), "meetup": rng.randint(20, 120)}[event_type]
    status = "C" if start < now else "O"
    if rng.random() < 0.05:
        status = rng.choice("DX")
    return {
        "chapter_id": 0 if event_type == "webinar" else chapter_id,
        "event_type": event_type,
        "title": rng.choice(EVENT_TITLES[event_type]).format(year=start.year, city=city),
        "start_dt": start,
        "end_dt": ZERO_DATETIME if rng.random() < 0.05 else start + duration,
        "capacity": capacity,
        "price": Decimal(price),
        "ce_credits": Decimal(rng.choice(["1.00", "1.50", "3.00", "6.25", "12.00", "18.50"])),
        "status": status,
        "created": start - dt.timedelta(days=rng.randint(30, 200)),
    }


def product_item(rng: random.Random) -> dict[str, Any]:
    sku, description, price = rng.choice(PRODUCTS)
    item_type = "donation" if sku.startswith("DON") else "product"
    return {"item_type": item_type, "ref_id": 0, "sku": sku, "description": description,
            "qty": rng.choice([1, 1, 1, 2, 3]), "unit_price": Decimal(price)}


def membership_item(member_type_id: int, year: int) -> dict[str, Any]:
    code, label = MEMBERSHIP_TYPES[member_type_id - 1][:2]
    return {"item_type": "membership", "ref_id": member_type_id, "sku": f"DUES-{code}",
            "description": f"{label} dues {year}", "qty": 1, "unit_price": MEMBERSHIP_FEES[member_type_id]}


def event_item(event_id: int, title: str, price: Decimal) -> dict[str, Any]:
    return {"item_type": "event", "ref_id": event_id, "sku": f"EVT-{event_id}", "description": title[:255],
            "qty": 1, "unit_price": price}


def payment_row(rng: random.Random, amount: Decimal, currency: str, when: dt.datetime,
                method: str | None = None) -> dict[str, Any]:
    method = method or rng.choices(("card", "check", "transfer", "invoice"), (75, 8, 7, 10))[0]
    pending = method == "invoice" and rng.random() < 0.5
    ref, raw = None, None
    if method == "card":
        ref = "ch_" + "".join(rng.choice("0123456789abcdef") for _ in range(24))
        failed = rng.random() < 0.03
        raw = json.dumps({"id": ref, "object": "charge", "amount": int(amount * 100), "currency": currency.lower(),
                          "status": "failed" if failed else "succeeded",
                          "card": {"brand": rng.choice(["visa", "mastercard", "amex"]), "last4": f"{rng.randint(0, 9999):04d}"},
                          "created": int(when.replace(tzinfo=dt.UTC).timestamp())})
        status = "F" if failed else "S"
    elif method == "transfer":
        ref = f"TRF{rng.randint(10**9, 10**10 - 1)}"
        raw = json.dumps({"bank": "ACME BANK", "reference": ref, "value_date": when.date().isoformat()})
        status = "S"
    elif method == "check":
        ref = f"CHK#{rng.randint(1000, 99999)}"
        status = "S"
    else:
        status = "P" if pending else "S"
    return {"amount": amount, "method": method, "gateway_ref": ref, "status": status,
            "paid_at": ZERO_DATETIME if status in ("P", "F") else when + dt.timedelta(minutes=rng.randint(0, 90)),
            "raw_response": raw}


def order_totals(items: Sequence[Mapping[str, Any]]) -> Decimal:
    return sum((Decimal(it["qty"]) * it["unit_price"] for it in items), Decimal("0.00"))


def random_currency(rng: random.Random) -> str:
    return rng.choices(("USD", "CAD", "EUR"), (85, 10, 5))[0]


# --- seeding ----------------------------------------------------------------------------------------

def _insert_many(cur: pymysql.cursors.Cursor, table: str, rows: list[dict[str, Any]], batch: int = 500) -> int:
    if not rows:
        return 0
    columns = list(rows[0])
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    for start in range(0, len(rows), batch):
        cur.executemany(sql, [tuple(r[c] for c in columns) for r in rows[start:start + batch]])
    return len(rows)


def _next_id(cur: pymysql.cursors.Cursor, table: str) -> int:
    cur.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")
    return int(cur.fetchone()[0])


def _seed_reference(cur: pymysql.cursors.Cursor) -> dict[str, int]:
    counts = {}
    cur.execute("SELECT COUNT(*) FROM membership_types")
    if cur.fetchone()[0] == 0:
        counts["membership_types"] = _insert_many(cur, "membership_types", [
            {"id": i + 1, "code": c, "label": label, "annual_fee": Decimal(f), "is_active": a}
            for i, (c, label, f, a) in enumerate(MEMBERSHIP_TYPES)])
    cur.execute("SELECT COUNT(*) FROM chapters")
    if cur.fetchone()[0] == 0:
        counts["chapters"] = _insert_many(cur, "chapters", [
            {"id": i + 1, "code": c, "name": n, "region": r, "country": k, "is_active": int(c != "SAO"),
             "created": ZERO_DATETIME if c in ("NYC", "BOS") else dt.datetime(2001 + i, 3, 1)}
            for i, (c, n, r, k) in enumerate(CHAPTERS)])
    cur.execute("SELECT COUNT(*) FROM certifications")
    if cur.fetchone()[0] == 0:
        counts["certifications"] = _insert_many(cur, "certifications", [
            {"id": i + 1, "code": c, "name": n, "issuing_body": b, "validity_months": v, "required_credits": Decimal(rc)}
            for i, (c, n, b, v, rc) in enumerate(CERTIFICATIONS)])
    return counts


def seed(
    params: ConnParams | Mapping[str, Any],
    members: int = 1000,
    *,
    rng_seed: int = 42,
    events: int | None = None,
    now: dt.datetime = SEED_NOW,
) -> dict[str, int]:
    """Insert deterministic data for `members` members (plus their events, registrations, certifications,
    credits, orders and payments). Appends after existing rows; returns rows inserted per table."""
    rng = random.Random(rng_seed)
    conn = connect(params)
    counts: dict[str, int] = {}
    try:
        with conn.cursor() as cur:
            counts.update(_seed_reference(cur))
            conn.commit()

            first_member = _next_id(cur, "members")
            member_rows = []
            for i in range(members):
                row = {"id": first_member + i, **member_row(rng, now)}
                if i == 0:  # one fixed row with every quirk, for tests and demos
                    row.update(email="  Zoe.Muller@Example.COM ", first_name="Zoë", last_name="Müller",
                               city="Zürich", country="CH", chapter_id=11, join_date=ZERO_DATE,
                               last_login=ZERO_DATETIME, birth_date="", deleted=0)
                if i == 1:
                    row.update(email="Francois.Lefevre@members.assoc.org", first_name="François", last_name="Lefèvre",
                               points=3_000_000_000,
                               birth_date="31/12/1969", status="A", is_active=1, deleted=0)
                member_rows.append(row)
            counts["members"] = _insert_many(cur, "members", member_rows)
            conn.commit()

            first_event = _next_id(cur, "events")
            event_rows = [{"id": first_event + i, **event_row(rng, now)}
                          for i in range(events if events is not None else max(10, members // 25))]
            counts["events"] = _insert_many(cur, "events", event_rows)
            conn.commit()

            counts.update(_seed_activity(cur, rng, now, member_rows, event_rows))
            conn.commit()
    finally:
        conn.close()
    return counts


def _seed_activity(cur, rng: random.Random, now: dt.datetime, member_rows: list[dict], event_rows: list[dict]) -> dict[str, int]:
    if not member_rows:
        return {}
    counts = {}
    by_id = {e["id"]: e for e in event_rows}
    registrations = []
    next_reg = _next_id(cur, "event_registrations")
    for _ in range(int(len(member_rows) * 1.5) if event_rows else 0):
        member = rng.choice(member_rows)
        event = rng.choice(event_rows)
        status = rng.choices((0, 1, 2, 3), (5, 80, 5, 10))[0]
        past = event["start_dt"] < now
        registrations.append({
            "id": next_reg + len(registrations), "member_id": member["id"], "event_id": event["id"], "status": status,
            "registered_at": event["start_dt"] - dt.timedelta(days=rng.randint(1, 90), minutes=rng.randint(0, 1440)),
            "attended": int(past and status == 1 and rng.random() < 0.8),
            "fee_paid": event["price"] if status == 1 else Decimal("0.00"),
        })
    counts["event_registrations"] = _insert_many(cur, "event_registrations", registrations)

    certs = []
    next_cert = _next_id(cur, "member_certifications")
    for _ in range(int(len(member_rows) * 0.4)):
        member = rng.choice(member_rows)
        cert_id = rng.randint(1, len(CERTIFICATIONS))
        months = CERTIFICATIONS[cert_id - 1][3]
        issued = random_datetime(rng, dt.datetime(2005, 1, 1), now).date()
        expires = ZERO_DATE if months == 0 or rng.random() < 0.05 else issued + dt.timedelta(days=months * 30)
        status = "R" if rng.random() < 0.02 else ("E" if expires != ZERO_DATE and expires < now.date() else "A")
        cid = next_cert + len(certs)
        certs.append({"id": cid, "member_id": member["id"], "certification_id": cert_id,
                      "cert_number": f"{CERTIFICATIONS[cert_id - 1][0]}-{issued.year}-{cid:06d}",
                      "issued_on": issued, "expires_on": expires, "status": status})
    counts["member_certifications"] = _insert_many(cur, "member_certifications", certs)

    credits = []
    next_credit = _next_id(cur, "ce_credits")
    attended = [r for r in registrations if r["attended"]]
    for _ in range(len(member_rows) * 2):
        if attended and rng.random() < 0.3:
            reg = rng.choice(attended)
            event = by_id[reg["event_id"]]
            credits.append({"id": next_credit + len(credits), "member_id": reg["member_id"], "event_id": event["id"],
                            "activity": event["title"], "credits": event["ce_credits"],
                            "earned_on": event["start_dt"].date(), "verified": 1})
        else:
            credits.append({"id": next_credit + len(credits), "member_id": rng.choice(member_rows)["id"], "event_id": None,
                            "activity": rng.choice(ACTIVITIES),
                            "credits": Decimal(rng.choice(["0.50", "1.00", "1.50", "2.00", "3.00", "6.25", "12.00"])),
                            "earned_on": ZERO_DATE if rng.random() < 0.02 else random_datetime(rng, dt.datetime(2015, 1, 1), now).date(),
                            "verified": int(rng.random() < 0.7)})
    counts["ce_credits"] = _insert_many(cur, "ce_credits", credits)

    orders, items, payments = [], [], []
    next_order, next_item, next_payment = (_next_id(cur, t) for t in ("orders", "order_items", "payments"))
    for _ in range(int(len(member_rows) * 1.2)):
        member = rng.choice(member_rows)
        created = random_datetime(rng, dt.datetime(2012, 1, 1), now)
        kind = rng.random()
        if kind < 0.45:
            lines = [membership_item(member["member_type_id"], created.year)]
        elif kind < 0.75 and event_rows:
            event = rng.choice(event_rows)
            lines = [event_item(event["id"], event["title"], event["price"])]
        else:
            lines = [product_item(rng) for _ in range(rng.randint(1, 3))]
        oid = next_order + len(orders)
        currency = random_currency(rng)
        total = order_totals(lines)
        payment = payment_row(rng, total, currency, created) if total > 0 else None
        status = "P" if total == 0 or (payment and payment["status"] == "S") else "N"
        if status == "P" and payment and rng.random() < 0.03:
            status = "R"
            payment["status"] = "R"
        elif status == "N" and rng.random() < 0.2:
            status = "C"
        orders.append({"id": oid, "member_id": member["id"], "order_no": f"ORD{created.year}{oid:07d}", "total": total,
                       "currency": currency, "status": status, "created": created, "updated": created})
        for line in lines:
            items.append({"id": next_item + len(items), "order_id": oid, **line})
        if payment:
            payments.append({"id": next_payment + len(payments), "order_id": oid, **payment})
    counts["orders"] = _insert_many(cur, "orders", orders)
    counts["order_items"] = _insert_many(cur, "order_items", items)
    counts["payments"] = _insert_many(cur, "payments", payments)
    return counts


def table_counts(params: ConnParams | Mapping[str, Any], tables: Iterable[str] = TABLES) -> dict[str, int]:
    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            out = {}
            for table in tables:
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                out[table] = int(cur.fetchone()[0])
            return out
    finally:
        conn.close()


def add_conn_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ConnParams.from_env()
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--user", default=defaults.user)
    parser.add_argument("--password", default=defaults.password)
    parser.add_argument("--database", default=defaults.database)


def params_from_args(args: argparse.Namespace) -> ConnParams:
    return ConnParams(host=args.host, port=args.port, user=args.user, password=args.password, database=args.database)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc.demo.seed", description=__doc__.splitlines()[0])
    add_conn_arguments(parser)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--events", type=int, default=None, help="default: max(10, members/25)")
    parser.add_argument("--seed", dest="rng_seed", type=int, default=42)
    parser.add_argument("--no-schema", action="store_true", help="keep existing tables and append")
    args = parser.parse_args(argv)
    params = params_from_args(args)
    try:
        started = time.monotonic()
        if not args.no_schema:
            create_schema(params)
        counts = seed(params, members=args.members, rng_seed=args.rng_seed, events=args.events)
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    for table, n in counts.items():
        print(f"{table:24} {n:8d}")
    print(f"{'total':24} {total:8d} rows in {elapsed:.2f}s into {params!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
