"""`cdc mappings check`'s comparison of mappings with information_schema columns (pure part)."""

from __future__ import annotations

from cdc.mapping import EntityMapping
from cdc.mapping.check import SourceColumn, check


def people(skip_when=(), **fields) -> EntityMapping:
    return EntityMapping.model_validate({"entity": "person", "source": {"db": "d", "table": "people"}, "key": ["id"],
                                         "fields": {"id": {"column": "id", "type": "integer"}} | fields,
                                         "skip_when": list(skip_when)})


COLUMNS = [SourceColumn("d", "people", "id", "int", "int(11)"), SourceColumn("d", "people", "flags", "bit", "bit(8)"),
           SourceColumn("d", "people", "tags", "set", "set('a','b')"), SourceColumn("d", "people", "raw", "binary", "binary(16)"),
           SourceColumn("d", "people", "born", "date", "date")]


def kinds(findings):
    return sorted((f.kind, f.column) for f in findings)


def test_hints_the_read_paths_need_are_required():
    findings = check([people(flags={"column": "flags", "type": "integer"}, tags={"column": "tags", "type": "json"},
                             raw={"column": "raw", "type": "bytes"}, born={"column": "born", "type": "bytes"})], COLUMNS)
    assert kinds(findings) == [("type_mismatch", "born"), ("type_mismatch", "flags"), ("type_mismatch", "raw"), ("type_mismatch", "tags")]
    assert any("column_type: binary(16)" in f.message for f in findings)
    fixed = people(flags={"column": "flags", "type": "integer", "column_type": "bit(8)"},
                   tags={"column": "tags", "type": "json", "column_type": "set"},
                   raw={"column": "raw", "type": "bytes", "column_type": "binary(16)"}, born={"column": "born", "type": "date"})
    assert check([fixed], COLUMNS) == []


def test_missing_table_and_condition_columns_and_unmapped_columns():
    gone = EntityMapping.model_validate({"entity": "x", "source": {"db": "d", "table": "nope"}, "key": ["id"],
                                         "fields": {"id": {"column": "id", "type": "integer"}}})
    findings = check([gone, people(skip_when=[{"column": "deleted", "equals": 1}])], COLUMNS)
    assert kinds(findings) == [("missing_column", "deleted"), ("missing_table", None), ("unmapped_column", "born"),
                               ("unmapped_column", "flags"), ("unmapped_column", "raw"), ("unmapped_column", "tags")]
    assert [f.is_error for f in findings if f.kind == "unmapped_column"] == [False] * 4
