"""Live workload against the demo `legacy` database: what the PHP platform does all day.

    python -m cdc.demo.workload --rate 200 --duration 10     # paced, progress on stderr
    python -m cdc.demo.workload --max-ops 5000               # as fast as one connection goes

Each operation is one transaction of 1-20 rows (except the optional `bulk` kind) and may touch several
tables: sign-ups (member + order + item + payment, then the member is activated in the same transaction),
event registrations with their order, logins, profile and status updates, attendance (multi-row update
plus CE credits), purchases, invoice settlements, certifications (renewal expires the old one), points
for a chapter (multi-row update), registration cancellations (hard delete + refund), soft and hard
deletes of members. Works on empty tables: operations that need a row fall back to creating one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pymysql

from cdc.demo import seed as data
from cdc.demo.seed import ConnParams, connect

DEFAULT_WEIGHTS: dict[str, int] = {
    "signup": 6,
    "login": 22,
    "profile_update": 8,
    "status_change": 5,
    "register": 12,
    "cancel_registration": 5,
    "attendance": 5,
    "purchase": 8,
    "settle_invoice": 3,
    "ce_credit": 6,
    "certify": 3,
    "award_points": 4,
    "soft_delete_member": 3,
    "hard_delete_member": 2,
    "new_event": 1,
    "bulk": 0,
}
BULK_WEIGHT = 1  # per 100-ish operations when bulk=True


@dataclass
class WorkloadResult:
    ops: Counter = field(default_factory=Counter)  # operations executed, per kind
    rows: Counter = field(default_factory=Counter)  # rows inserted / updated / deleted
    errors: int = 0
    elapsed: float = 0.0

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def rate(self) -> float:
        return self.total_ops / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"ops": dict(self.ops), "rows": dict(self.rows), "total_ops": self.total_ops,
                "errors": self.errors, "elapsed_s": round(self.elapsed, 3), "ops_per_s": round(self.rate, 1)}

    def __str__(self) -> str:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(self.ops.items()))
        return f"{self.summary()} [{kinds}]"

    def summary(self) -> str:
        return (f"{self.elapsed:6.1f}s ops={self.total_ops} ({self.rate:.1f}/s) ins={self.rows['inserted']} "
                f"upd={self.rows['updated']} del={self.rows['deleted']} errors={self.errors}")


class _Skip(Exception):
    """The operation found nothing to work on (empty or exhausted table)."""


class Workload:
    """Run realistic changes at `rate` ops/s (None: as fast as possible) until `duration` seconds or
    `max_ops` operations (whichever first; neither: until `stop()` or Ctrl-C). `run()` returns the counts,
    also after Ctrl-C (the transaction in flight is rolled back)."""

    def __init__(
        self,
        params: ConnParams | Mapping[str, Any],
        *,
        rate: float | None = None,
        duration: float | None = None,
        max_ops: int | None = None,
        rng_seed: int | None = None,
        weights: Mapping[str, int] | None = None,
        bulk: bool = False,
        progress: Callable[[WorkloadResult], None] | None = None,
        progress_interval: float = 5.0,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for as fast as possible)")
        self.params = params
        self.rate = rate
        self.duration = duration
        self.max_ops = max_ops
        self.rng = random.Random(rng_seed)
        w = dict(DEFAULT_WEIGHTS, **(weights or {}))
        if bulk and not w.get("bulk"):
            w["bulk"] = BULK_WEIGHT
        unknown = set(w) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown operation kinds: {sorted(unknown)}")
        self._kinds = [k for k, v in w.items() if v > 0]
        self._weights = [w[k] for k in self._kinds]
        self.progress = progress
        self.progress_interval = progress_interval
        self._stop = threading.Event()
        self._conn: pymysql.Connection | None = None
        self._bounds: dict[str, list[int]] = {}
        self.result = WorkloadResult()

    def stop(self) -> None:
        self._stop.set()

    # --- driver ---------------------------------------------------------------------------------

    def run(self) -> WorkloadResult:
        self._conn = connect(self.params)
        result = self.result
        started = time.monotonic()
        deadline = started + self.duration if self.duration is not None else None
        interval = 1.0 / self.rate if self.rate else 0.0
        next_at = started
        next_report = started + self.progress_interval
        consecutive_errors = 0
        try:
            self._load_bounds()
            while not self._stop.is_set():
                if self.max_ops is not None and result.total_ops >= self.max_ops:
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if interval:
                    if next_at > now:
                        if deadline is not None and next_at >= deadline:
                            self._stop.wait(deadline - now)
                            break
                        try:
                            if self._stop.wait(next_at - now):
                                break
                        except KeyboardInterrupt:
                            break
                    elif now - next_at > 1.0:
                        next_at = now  # after a stall keep the pace, do not burst to catch up
                    next_at += interval
                try:
                    self._one_operation()
                    consecutive_errors = 0
                except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                    result.errors += 1
                    consecutive_errors += 1
                    if consecutive_errors >= 10:
                        raise ConnectionError(f"workload: giving up after 10 consecutive errors: {exc}") from exc
                    self._reconnect()
                except KeyboardInterrupt:
                    self._stop.set()
                    break
                now = time.monotonic()
                if self.progress and now >= next_report:
                    result.elapsed = now - started
                    self.progress(result)
                    next_report = now + self.progress_interval
        finally:
            result.elapsed = time.monotonic() - started
            try:
                self._conn.rollback()
                self._conn.close()
            except Exception:
                pass
        return result

    def _reconnect(self) -> None:
        try:
            self._conn.rollback()
        except Exception:
            pass
        try:
            self._conn.ping()
        except Exception:
            try:
                self._conn.close()
            except Exception:
                pass
            try:
                self._conn = connect(self.params)  # pymysql deprecates ping(reconnect=True): a new connection
            except Exception:
                self._stop.wait(0.5)

    def _one_operation(self) -> None:
        kind = self.rng.choices(self._kinds, self._weights)[0]
        self._counts = Counter()
        with self._conn.cursor() as cur:
            try:
                getattr(self, f"_op_{kind}")(cur)
            except _Skip:
                self._conn.rollback()
                self._counts = Counter()
                kind = "new_event" if kind in ("register", "attendance") else "signup"
                getattr(self, f"_op_{kind}")(cur)
        self._conn.commit()
        self.result.ops[kind] += 1
        self.result.rows.update(self._counts)

    # --- helpers ----------------------------------------------------------------------------------

    def _load_bounds(self) -> None:
        with self._conn.cursor() as cur:
            for table in ("members", "events", "event_registrations", "payments", "orders"):
                cur.execute(f"SELECT COALESCE(MIN(id), 0), COALESCE(MAX(id), 0) FROM {table}")
                lo, hi = cur.fetchone()
                self._bounds[table] = [int(lo), int(hi)]
        self._conn.commit()

    def _pick(self, cur, table: str, columns: str = "id", where: str = "1", args: Sequence[Any] = ()) -> tuple:
        """A random existing row (uniform over the id range, so gaps are fine); raises _Skip if none."""
        lo, hi = self._bounds.get(table, (0, 0))
        if hi == 0:
            raise _Skip(table)
        start = self.rng.randint(max(lo, 1), hi)
        for cmp, order in ((">=", "ASC"), ("<", "DESC")):
            cur.execute(f"SELECT {columns} FROM {table} WHERE id {cmp} %s AND ({where}) ORDER BY id {order} LIMIT 1",
                        (start, *args))
            row = cur.fetchone()
            if row:
                return row
        raise _Skip(table)

    def _insert(self, cur, table: str, row: Mapping[str, Any]) -> int:
        cols = list(row)
        cur.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                    [row[c] for c in cols])
        self._counts["inserted"] += 1
        new_id = int(cur.lastrowid)
        if table in self._bounds:
            bounds = self._bounds[table]
            bounds[1] = max(bounds[1], new_id)
            bounds[0] = bounds[0] or new_id
        return new_id

    def _exec(self, cur, kind: str, sql: str, args: Sequence[Any] = ()) -> int:
        n = cur.execute(sql, args)
        self._counts[kind] += n
        return n

    def _order(self, cur, member_id: int, lines: list[dict[str, Any]], now: dt.datetime) -> tuple[int, str]:
        """Order + items + payment; returns (order id, payment status or '')."""
        currency = data.random_currency(self.rng)
        total = data.order_totals(lines)
        payment = data.payment_row(self.rng, total, currency, now) if total > 0 else None
        status = "P" if payment is None or payment["status"] == "S" else "N"
        order_id = self._insert(cur, "orders", {"member_id": member_id, "order_no": "", "total": total,
                                                "currency": currency, "status": status, "created": now})
        self._exec(cur, "updated", "UPDATE orders SET order_no = %s WHERE id = %s", (f"ORD{now.year}{order_id:07d}", order_id))
        for line in lines:
            self._insert(cur, "order_items", {"order_id": order_id, **line})
        if payment:
            payment["paid_at"] = payment["paid_at"] if payment["status"] in ("P", "F") else now
            self._insert(cur, "payments", {"order_id": order_id, **payment})
        return order_id, payment["status"] if payment else ""

    def _member(self, cur, columns: str = "id") -> tuple:
        return self._pick(cur, "members", columns, "deleted = 0")

    # --- operations -------------------------------------------------------------------------------

    def _op_signup(self, cur) -> None:
        now = dt.datetime.now().replace(microsecond=0)
        row = data.member_row(self.rng, now)
        row.update(status="P", is_active=1, join_date=now.date(), last_login=data.ZERO_DATETIME, created=now,
                   modified=now, balance=Decimal("0.00"), points=0, deleted=0)
        member_id = self._insert(cur, "members", row)
        fee = data.MEMBERSHIP_FEES.get(row["member_type_id"], Decimal("0.00"))
        paid = "S"
        if fee > 0:
            _, paid = self._order(cur, member_id, [data.membership_item(row["member_type_id"], now.year)], now)
        if paid == "S":
            self._exec(cur, "updated", "UPDATE members SET status = 'A', points = points + 100 WHERE id = %s", (member_id,))

    def _op_login(self, cur) -> None:
        (member_id,) = self._member(cur)
        self._exec(cur, "updated", "UPDATE members SET last_login = NOW(), points = points + %s WHERE id = %s",
                   (self.rng.choice([0, 0, 1, 5]), member_id))

    def _op_profile_update(self, cur) -> None:
        member_id, first, last = self._member(cur, "id, first_name, last_name")
        what = self.rng.random()
        if what < 0.4:
            sql, args = "UPDATE members SET email = %s WHERE id = %s", (data.messy_email(self.rng, first, last), member_id)
        elif what < 0.6:
            sql, args = "UPDATE members SET phone = %s WHERE id = %s", (data.messy_phone(self.rng), member_id)
        elif what < 0.8:
            country = self.rng.choice(list(data.CITIES))
            sql = "UPDATE members SET address = %s, city = %s, country = %s WHERE id = %s"
            args = (f"{self.rng.randint(1, 999)} {self.rng.choice(data.STREETS)}", self.rng.choice(data.CITIES[country]),
                    country, member_id)
        else:
            sql, args = "UPDATE members SET newsletter_optin = 1 - newsletter_optin WHERE id = %s", (member_id,)
        self._exec(cur, "updated", sql, args)

    def _op_status_change(self, cur) -> None:
        member_id, status = self._member(cur, "id, status")
        new = self.rng.choice([s for s in data.MEMBER_STATUSES if s != status])
        self._exec(cur, "updated", "UPDATE members SET status = %s, is_active = %s WHERE id = %s",
                   (new, int(new in ("A", "P")), member_id))

    def _op_register(self, cur) -> None:
        (member_id,) = self._member(cur)
        event_id, title, price = self._pick(cur, "events", "id, title, price", "status = 'O'")
        now = dt.datetime.now().replace(microsecond=0)
        status, fee = 1, Decimal("0.00")
        if price > 0:
            _, paid = self._order(cur, member_id, [data.event_item(event_id, title, price)], now)
            status, fee = (1, price) if paid == "S" else (0, Decimal("0.00"))
        if self.rng.random() < 0.05:
            status = 2  # waitlisted
        self._insert(cur, "event_registrations", {"member_id": member_id, "event_id": event_id, "status": status,
                                                  "registered_at": now, "attended": 0, "fee_paid": fee})

    def _op_cancel_registration(self, cur) -> None:
        reg_id, member_id, event_id = self._pick(cur, "event_registrations", "id, member_id, event_id", "attended = 0")
        self._exec(cur, "deleted", "DELETE FROM event_registrations WHERE id = %s", (reg_id,))
        cur.execute("SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.member_id = %s"
                    " AND i.item_type = 'event' AND i.ref_id = %s AND o.status = 'P' LIMIT 1", (member_id, event_id))
        order = cur.fetchone()
        if order:
            self._exec(cur, "updated", "UPDATE orders SET status = 'R' WHERE id = %s", order)
            self._exec(cur, "updated", "UPDATE payments SET status = 'R' WHERE order_id = %s", order)

    def _op_attendance(self, cur) -> None:
        event_id, title, credits, start = self._pick(cur, "events", "id, title, ce_credits, start_dt", "status <> 'X'")
        cur.execute("SELECT id, member_id FROM event_registrations WHERE event_id = %s AND status = 1 AND attended = 0"
                    " ORDER BY id LIMIT 10", (event_id,))
        regs = cur.fetchall()
        if not regs:
            n = self._exec(cur, "updated", "UPDATE event_registrations SET status = 1 WHERE event_id = %s AND status = 0"
                           " ORDER BY id LIMIT 10", (event_id,))
            if not n:
                raise _Skip("attendance")
            return
        ids = [r[0] for r in regs]
        self._exec(cur, "updated", f"UPDATE event_registrations SET attended = 1 WHERE id IN ({', '.join(['%s'] * len(ids))})", ids)
        earned = start.date() if isinstance(start, dt.datetime) else dt.date.today()
        rows = [(member_id, event_id, title, credits, earned, 1) for _, member_id in regs]
        n = cur.executemany("INSERT INTO ce_credits (member_id, event_id, activity, credits, earned_on, verified)"
                            " VALUES (%s, %s, %s, %s, %s, %s)", rows)
        self._counts["inserted"] += n

    def _op_purchase(self, cur) -> None:
        (member_id,) = self._member(cur)
        now = dt.datetime.now().replace(microsecond=0)
        self._order(cur, member_id, [data.product_item(self.rng) for _ in range(self.rng.randint(1, 5))], now)

    def _op_settle_invoice(self, cur) -> None:
        payment_id, order_id = self._pick(cur, "payments", "id, order_id", "status = 'P'")
        self._exec(cur, "updated", "UPDATE payments SET status = 'S', paid_at = NOW(), gateway_ref = %s WHERE id = %s",
                   (f"INV-{payment_id:08d}", payment_id))
        self._exec(cur, "updated", "UPDATE orders SET status = 'P' WHERE id = %s", (order_id,))

    def _op_ce_credit(self, cur) -> None:
        (member_id,) = self._member(cur)
        today = dt.date.today()
        rows = [(member_id, self.rng.choice(data.ACTIVITIES),
                 Decimal(self.rng.choice(["0.50", "1.00", "1.50", "2.00", "3.00"])), today, int(self.rng.random() < 0.5))
                for _ in range(self.rng.randint(1, 3))]
        self._counts["inserted"] += cur.executemany(
            "INSERT INTO ce_credits (member_id, activity, credits, earned_on, verified) VALUES (%s, %s, %s, %s, %s)", rows)

    def _op_certify(self, cur) -> None:
        (member_id,) = self._member(cur)
        cert_id = self.rng.randint(1, len(data.CERTIFICATIONS))
        code, _, _, months, _ = data.CERTIFICATIONS[cert_id - 1]
        today = dt.date.today()
        self._exec(cur, "updated", "UPDATE member_certifications SET status = 'E', expires_on = %s"
                   " WHERE member_id = %s AND certification_id = %s AND status = 'A'", (today, member_id, cert_id))
        new_id = self._insert(cur, "member_certifications", {
            "member_id": member_id, "certification_id": cert_id, "cert_number": "", "issued_on": today,
            "expires_on": today + dt.timedelta(days=30 * months) if months else data.ZERO_DATE, "status": "A"})
        self._exec(cur, "updated", "UPDATE member_certifications SET cert_number = %s WHERE id = %s",
                   (f"{code}-{today.year}-{new_id:06d}", new_id))

    def _op_award_points(self, cur) -> None:
        lo, hi = self._bounds["members"]
        if hi == 0:
            raise _Skip("members")
        n = self._exec(cur, "updated", "UPDATE members SET points = points + %s WHERE chapter_id = %s AND deleted = 0"
                       " AND id >= %s ORDER BY id LIMIT 20",
                       (self.rng.choice([10, 25, 50]), self.rng.randint(1, len(data.CHAPTERS)), self.rng.randint(lo, hi)))
        if not n:
            raise _Skip("members")

    def _op_soft_delete_member(self, cur) -> None:
        (member_id,) = self._member(cur)
        self._exec(cur, "updated", "UPDATE members SET deleted = 1, is_active = 0 WHERE id = %s", (member_id,))

    def _op_hard_delete_member(self, cur) -> None:
        try:  # mostly purge soft-deleted members, sometimes delete a live one outright
            (member_id,) = self._pick(cur, "members", "id", "deleted = %s", (int(self.rng.random() < 0.7),))
        except _Skip:
            (member_id,) = self._pick(cur, "members")
        for table in ("event_registrations", "ce_credits", "member_certifications"):
            self._exec(cur, "deleted", f"DELETE FROM {table} WHERE member_id = %s", (member_id,))
        self._exec(cur, "deleted", "DELETE FROM members WHERE id = %s", (member_id,))  # orders stay: financial records

    def _op_new_event(self, cur) -> None:
        now = dt.datetime.now().replace(microsecond=0)
        row = data.event_row(self.rng, now)
        start = now + dt.timedelta(days=self.rng.randint(7, 365))
        row.update(start_dt=start.replace(minute=0, second=0), status="O", created=now)
        if row["end_dt"] != data.ZERO_DATETIME:
            row["end_dt"] = row["start_dt"] + dt.timedelta(hours=2)
        self._insert(cur, "events", row)

    def _op_bulk(self, cur) -> None:
        if self.rng.random() < 0.5:
            self._exec(cur, "updated", "UPDATE members SET points = 0 WHERE chapter_id = %s ORDER BY id LIMIT 500",
                       (self.rng.randint(1, len(data.CHAPTERS)),))
            return
        (member_id,) = self._member(cur)
        today = dt.date.today()
        rows = [(member_id, "LMS import: e-learning module", Decimal("0.25"), today, 1) for _ in range(200)]
        self._counts["inserted"] += cur.executemany(
            "INSERT INTO ce_credits (member_id, activity, credits, earned_on, verified) VALUES (%s, %s, %s, %s, %s)", rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc.demo.workload", description=__doc__.splitlines()[0])
    data.add_conn_arguments(parser)
    parser.add_argument("--rate", type=float, default=None, help="operations per second (default: as fast as possible)")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default 10 unless --max-ops)")
    parser.add_argument("--max-ops", type=int, default=None)
    parser.add_argument("--seed", dest="rng_seed", type=int, default=None)
    parser.add_argument("--bulk", action="store_true", help="also run occasional 200-500 row transactions")
    parser.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines on stderr")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None or args.max_ops is not None else 10.0
    workload = Workload(data.params_from_args(args), rate=args.rate, duration=duration, max_ops=args.max_ops,
                        rng_seed=args.rng_seed, bulk=args.bulk, progress_interval=args.progress,
                        progress=lambda r: print(f"[workload] {r.summary()}", file=sys.stderr, flush=True))
    try:
        result = workload.run()
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"[workload] done: {result.summary()}", file=sys.stderr)
    for kind, n in sorted(result.ops.items()):
        print(f"{kind:22} {n:8d}")
    print(f"{'total':22} {result.total_ops:8d}  ({result.rate:.1f} ops/s, rows: {dict(result.rows)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
