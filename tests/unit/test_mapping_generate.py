"""`cdc mappings init`'s generator (cdc.mapping.generate), on generated table descriptions: what it
writes must load as a mapping, map every column it can once, name fields in the canonical style, and
a later run on a hand-edited file must add new columns without touching a line of the edits."""

from __future__ import annotations

import os
import random

import pytest

from cdc.mapping import generate as gen
from cdc.mapping.loader import load_mapping_file

SEED = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))

# (DATA_TYPE, COLUMN_TYPE) pairs as information_schema gives them
TYPES = [
    ("tinyint", "tinyint(1)"), ("tinyint", "tinyint(4)"), ("int", "int(10) unsigned"), ("bigint", "bigint(20) unsigned"),
    ("bigint", "bigint(20)"), ("decimal", "decimal(65,30)"), ("float", "float"), ("double", "double"),
    ("date", "date"), ("datetime", "datetime(6)"), ("timestamp", "timestamp"), ("time", "time(3)"), ("year", "year(4)"),
    ("varchar", "varchar(40)"), ("longtext", "longtext"), ("binary", "binary(16)"), ("varbinary", "varbinary(8)"),
    ("blob", "blob"), ("enum", "enum('a','b')"), ("set", "set('x','y')"), ("bit", "bit(1)"), ("bit", "bit(9)"),
    ("bit", "bit(64)"), ("json", "json"), ("point", "point"), ("geometry", "geometry"), ("uuid", "uuid"),
]
NAME_PARTS = ["id", "ID", "Member", "memberId", "e-mail", "Date Joined", "2fa", "ünïcode", "a:b", "x'y", 'q"t', "us`er",
              "_lead", "trail_", "CamelCaseName", "UPPER", "a  b", "-", "名前"]


def random_table(rng: random.Random, n: int) -> gen.TableInfo:
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(NAME_PARTS) for _ in range(rng.randint(1, 3)))[:60]
        if name not in names:
            names.append(name)
    columns = [gen.ColumnInfo(name, *rng.choice(TYPES if i else TYPES[:-1]), nullable=rng.random() < 0.5,
                              is_json=rng.random() < 0.1) for i, name in enumerate(names)]  # a typed column to key by
    key_cols = [c for c in columns if c.data_type != "uuid"][: rng.randint(1, 2)]
    return gen.TableInfo("db", rng.choice(["members", "order_items", "Categories", "tbl-x", "boxes"]), tuple(columns),
                         primary_key=tuple(c.name for c in key_cols))


def test_generated_files_load_and_map_each_column_once(tmp_path):
    rng = random.Random(SEED)
    print(f"seed {SEED} (CDC_TEST_SEED={SEED} to repeat)")
    for i in range(150):
        table = random_table(rng, rng.randint(1, 25))
        out = gen.generate(table, rng.sample(["crm", "cache", "search"], rng.randint(0, 3)))
        path = tmp_path / f"{i}.yaml"
        path.write_text(out.text)
        mapping = load_mapping_file(path)  # valid YAML and a valid mapping
        mapped = [spec.column for spec in mapping.fields.values()]
        typed = [c.name for c in table.columns if c.data_type != "uuid"]
        assert sorted(mapped) == sorted(typed), (SEED, i)
        assert all(n[0].isalpha() and n.replace("_", "").isalnum() and n == n.lower() for n in mapping.fields), (SEED, i)
        assert [mapping.fields[k].column for k in mapping.key] == list(table.primary_key)
        assert len(out.notes) == len(table.columns) - len(typed)  # a left-out column is named, never silent
        assert not gen.edited(out.text)


@pytest.mark.parametrize("raw, expected", [
    ("memberID", "member_id"), ("Date Joined", "date_joined"), ("2fa", "f_2fa"), ("HTTPServer", "http_server"),
    ("e-mail", "e_mail"), ("__x__", "x"), ("ünïcode", "unicode"), ("名前", "field"),
])
def test_snake_case(raw, expected):
    assert gen.snake_case(raw) == expected


@pytest.mark.parametrize("table, entity", [
    ("members", "member"), ("categories", "category"), ("order_items", "order_item"), ("addresses", "address"),
    ("boxes", "box"), ("status", "status"), ("news", "news"), ("MemberCertifications", "member_certification"),
])
def test_entity_names_are_singular_snake_case(table, entity):
    assert gen.entity_name(table) == entity


def test_a_table_without_a_usable_key_is_refused_with_the_reason():
    cols = (gen.ColumnInfo("a", "int", "int(11)", nullable=True), gen.ColumnInfo("b", "int", "int(11)", nullable=False))
    with pytest.raises(gen.NoUsableKey, match=r"db\.t has no primary key and no usable unique key \(unique index ua has "
                                              r"nullable column\(s\) \['a'\]\).*ALTER TABLE db\.t ADD PRIMARY KEY"):
        gen.generate(gen.TableInfo("db", "t", cols, unique_keys=(("ua", ("a",)),)), [])
    out = gen.generate(gen.TableInfo("db", "t", cols, unique_keys=(("ua", ("a",)), ("ub", ("b",)))), [])
    assert "key: [b]  # no primary key: the key is the unique index ub (NOT NULL columns)" in out.text


def test_update_of_a_hand_edited_file_adds_new_columns_and_keeps_every_edit(tmp_path):
    rng = random.Random(SEED + 1)
    for i in range(60):
        table = random_table(rng, rng.randint(2, 12))
        first = gen.generate(table, ["crm"])
        lines = first.text.splitlines()
        fields = [j for j, line in enumerate(lines) if line.startswith("  ") and "column:" in line]
        for j in rng.sample(fields, rng.randint(1, len(fields))):  # hand edits: a transform, a comment
            lines[j] = lines[j].replace("type: string}", "type: string, transforms: [trim]}") + "  # checked by hand"
        edited = "\n".join(lines) + "\n"
        assert gen.edited(edited)
        added = [gen.ColumnInfo(f"new_col_{k}", *rng.choice(TYPES[:-1])) for k in range(rng.randint(1, 3))]
        dropped = rng.choice([c for c in table.columns if c.name not in table.primary_key] or [None])
        changed = gen.TableInfo(table.db, table.table, tuple(c for c in table.columns if c is not dropped) + tuple(added),
                                table.primary_key)
        merged, notes = gen.merge(edited, gen.generate(changed, ["crm"]))
        kept = [line for line in merged.splitlines() if line in edited.splitlines()]
        assert kept == edited.splitlines(), (SEED, i)  # every line of the edited file, in order
        path = tmp_path / f"{i}.yaml"
        path.write_text(merged)
        mapping = load_mapping_file(path)
        assert {c.name for c in added} <= {spec.column for spec in mapping.fields.values()}
        if dropped is not None and dropped.data_type != "uuid":
            assert any(f"column {dropped.name} is gone from the source" in n for n in notes), (SEED, i, notes)
