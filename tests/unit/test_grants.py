"""SHOW GRANTS parsing (cdc.source.grants) on lines as MariaDB 10.x and MySQL 5.7/8 print them."""

from __future__ import annotations

import pytest

from cdc.source.grants import (
    GrantParseError,
    excess_privileges,
    excess_warning,
    missing_privileges,
    parse_grant,
    parse_grants,
)

MARIADB_MINIMAL = [
    "GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`%` IDENTIFIED BY PASSWORD '*8B2AB69632A9F9EB93E6D3710AE739A30FB461C6'",
]
MARIADB_ROOT = [
    "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
    "GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION",
]
MYSQL8_ROOT = [
    ("GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, SHUTDOWN, PROCESS, FILE, REFERENCES, INDEX, ALTER, "
    "SHOW DATABASES, SUPER, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, REPLICATION SLAVE, REPLICATION CLIENT, "
    "CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, EVENT, TRIGGER, CREATE TABLESPACE, CREATE ROLE, "
    "DROP ROLE ON *.* TO `root`@`localhost` WITH GRANT OPTION"),
    ("GRANT APPLICATION_PASSWORD_ADMIN,AUDIT_ABORT_EXEMPT,BACKUP_ADMIN,BINLOG_ADMIN,CONNECTION_ADMIN,"
    "REPLICATION_SLAVE_ADMIN,SYSTEM_VARIABLES_ADMIN ON *.* TO `root`@`localhost` WITH GRANT OPTION"),
    "GRANT PROXY ON ``@`` TO `root`@`localhost` WITH GRANT OPTION",
]


@pytest.mark.parametrize("line, kind, level, privileges, on, account", [
    (MARIADB_MINIMAL[0], "privileges", "global", ("SELECT", "REPLICATION SLAVE", "BINLOG MONITOR"), "*.*", "'cdc'@'%'"),
    ("GRANT USAGE ON *.* TO `cdc`@`localhost` REQUIRE SSL", "privileges", "global", ("USAGE",), "*.*", "'cdc'@'localhost'"),
    ("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'10.0.%'",  # MySQL 5.7 quoting
     "privileges", "global", ("REPLICATION SLAVE", "REPLICATION CLIENT"), "*.*", "'repl'@'10.0.%'"),
    ("GRANT ALL ON `legacy`.* TO `app`@`%`", "privileges", "database", ("ALL PRIVILEGES",), "`legacy`.*", "'app'@'%'"),
    ("GRANT SELECT, INSERT ON `legacy`.`members` TO `cdc`@`%`", "privileges", "table", ("SELECT", "INSERT"),
     "`legacy`.`members`", "'cdc'@'%'"),
    ("GRANT EXECUTE, ALTER ROUTINE ON PROCEDURE `legacy`.`purge` TO `cdc`@`%`", "privileges", "routine",
     ("EXECUTE", "ALTER ROUTINE"), "PROCEDURE `legacy`.`purge`", "'cdc'@'%'"),
    ("GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION", "proxy", "proxy", ("PROXY",), "``@`%`", "'root'@'localhost'"),
    ("REVOKE INSERT, UPDATE ON `mysql`.* FROM `cdc`@`%`", "revoke", "database", ("INSERT", "UPDATE"), "`mysql`.*", "'cdc'@'%'"),
])
def test_parses_one_line(line, kind, level, privileges, on, account):
    g = parse_grant(line)
    assert (g.kind, g.level, g.privileges, g.on, g.account) == (kind, level, privileges, on, account)


def test_quoted_names_may_hold_commas_spaces_and_keywords():
    g = parse_grant("GRANT SELECT (`id`, `a, b`), UPDATE (`to on`) ON `we,ird ON db`.`t TO x` TO `o'brien`@`%` WITH GRANT OPTION")
    assert g.privileges == ("SELECT (`id`, `a, b`)", "UPDATE (`to on`)")
    assert g.columns == {"SELECT": ("id", "a, b"), "UPDATE": ("to on",)}
    assert (g.db, g.table, g.level) == ("we,ird ON db", "t TO x", "table")
    assert g.account == "'o\\'brien'@'%'" and g.grant_option


def test_grant_option_is_found_among_resource_limits_but_not_in_a_password_hash():
    assert parse_grant("GRANT USAGE ON *.* TO `u`@`%` WITH MAX_QUERIES_PER_HOUR 10 GRANT OPTION").grant_option
    assert not parse_grant("GRANT USAGE ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD 'WITH GRANT OPTION'").grant_option
    assert not parse_grant("GRANT USAGE ON *.* TO `u`@`%` WITH MAX_USER_CONNECTIONS 5").grant_option


def test_role_grants_are_memberships_not_privileges():
    mysql = parse_grant("GRANT `cdc_role`@`%`,`reporting`@`%` TO `cdc`@`%`")
    assert mysql.kind == "role" and mysql.roles == ("`cdc_role`@`%`", "`reporting`@`%`")
    mariadb = parse_grant("GRANT `reporting` TO `cdc`@`%` WITH ADMIN OPTION")
    assert mariadb.kind == "role" and mariadb.roles == ("`reporting`",) and mariadb.grant_option
    assert excess_privileges([mysql]) == []


def test_unparseable_lines_are_returned_not_dropped():
    grants, bad = parse_grants(["GRANT SELECT ON *.* TO `u`@`%`", "SET DEFAULT ROLE `r` FOR `u`@`%`", "GRANT SELECT ON `x"])
    assert len(grants) == 1 and bad == ["SET DEFAULT ROLE `r` FOR `u`@`%`", "GRANT SELECT ON `x"]
    with pytest.raises(GrantParseError):
        parse_grant("GRANT SELECT ON `x")


# --- missing ------------------------------------------------------------------------------------------


def test_a_minimal_user_misses_nothing_and_has_nothing_extra():
    grants, _ = parse_grants(MARIADB_MINIMAL)
    assert missing_privileges(grants, ["legacy"]) == []
    assert excess_privileges(grants) == []


def test_missing_global_privileges_and_per_database_select():
    grants, _ = parse_grants(["GRANT USAGE ON *.* TO `u`@`%`", "GRANT SELECT ON `legacy`.* TO `u`@`%`"])
    assert missing_privileges(grants, ["legacy", "billing"]) == [
        ("REPLICATION SLAVE", "*.*"), ("REPLICATION CLIENT", "*.*"), ("SELECT", "`billing`.*")]


def test_select_through_a_like_pattern_or_on_every_mapped_table():
    base = "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `u`@`%`"
    pattern, _ = parse_grants([base, "GRANT SELECT ON `legacy\\_%`.* TO `u`@`%`"])
    assert missing_privileges(pattern, ["legacy_eu", "legacy_us"]) == []
    assert missing_privileges(pattern, ["legacyX"]) == [("SELECT", "`legacyX`.*")]  # \_ is a literal underscore
    tables, _ = parse_grants([base, "GRANT SELECT ON `legacy`.`members` TO `u`@`%`", "GRANT SELECT ON `legacy`.`orders` TO `u`@`%`"])
    assert missing_privileges(tables, ["legacy"], {("legacy", "members"), ("legacy", "orders")}) == []
    assert missing_privileges(tables, ["legacy"], {("legacy", "members"), ("legacy", "payments")}) == [("SELECT", "`legacy`.*")]


def test_all_privileges_or_super_satisfy_the_reader_but_are_excess():
    grants, _ = parse_grants(MARIADB_ROOT)
    assert missing_privileges(grants, ["legacy"]) == []
    sup, _ = parse_grants(["GRANT SELECT, REPLICATION SLAVE, SUPER ON *.* TO `u`@`%`"])
    assert missing_privileges(sup, ["legacy"]) == []
    assert [e.privileges for e in excess_privileges(sup)] == [("SUPER",)]


# --- excess -------------------------------------------------------------------------------------------


def test_mariadb_root_excess_and_revoke_statements():
    grants, _ = parse_grants(MARIADB_ROOT)
    excess = excess_privileges(grants)
    assert [e.revoke for e in excess] == [
        "REVOKE ALL PRIVILEGES, GRANT OPTION ON *.* FROM 'root'@'localhost'",
        "REVOKE PROXY, GRANT OPTION ON ''@'%' FROM 'root'@'localhost'",
    ]
    text = excess_warning("root", excess)
    assert "'root'" in text and "ALL PRIVILEGES" in text and "REVOKE ALL PRIVILEGES" in text
    # ALL also held the needed ones: the message says what to grant again.
    assert "then: GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'root'@'localhost'" in text


def test_mysql8_static_and_dynamic_privileges():
    grants, _ = parse_grants(MYSQL8_ROOT)
    excess = excess_privileges(grants)
    static = excess[0].privileges
    assert "SELECT" not in static and "REPLICATION SLAVE" not in static and "SHOW VIEW" not in static
    for p in ("INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "CREATE", "FILE", "SHUTDOWN", "SUPER", "GRANT OPTION"):
        assert p in static
    assert excess[1].privileges == ("APPLICATION_PASSWORD_ADMIN", "AUDIT_ABORT_EXEMPT", "BACKUP_ADMIN", "BINLOG_ADMIN",
                                    "CONNECTION_ADMIN", "REPLICATION_SLAVE_ADMIN", "SYSTEM_VARIABLES_ADMIN", "GRANT OPTION")
    assert excess[2].revoke == "REVOKE PROXY, GRANT OPTION ON ``@`` FROM 'root'@'localhost'"
    assert missing_privileges(grants, ["legacy"]) == []


def test_database_and_column_level_excess_and_partial_revokes():
    grants, _ = parse_grants([
        "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO `cdc`@`%`",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON `legacy`.* TO `cdc`@`%`",
        "GRANT SELECT (`id`), UPDATE (`email`) ON `legacy`.`members` TO `cdc`@`%`",
        "REVOKE DELETE ON `mysql`.* FROM `cdc`@`%`",
    ])
    assert [e.revoke for e in excess_privileges(grants)] == [
        "REVOKE INSERT, UPDATE, DELETE ON `legacy`.* FROM 'cdc'@'%'",
        "REVOKE UPDATE (`email`) ON `legacy`.`members` FROM 'cdc'@'%'",
    ]
