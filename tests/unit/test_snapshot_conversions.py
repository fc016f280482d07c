"""The snapshot's faster DATETIME/TIMESTAMP/DATE conversions give exactly PyMySQL's values."""

from __future__ import annotations

import pytest
from pymysql import converters

from cdc.snapshot.chunks import SNAPSHOT_CONVERSIONS, _fast_date, _fast_datetime

TEXTS = [
    "2024-01-02 03:04:05", "2024-01-02 03:04:05.1", "2024-01-02 03:04:05.12", "2024-01-02 03:04:05.1234",
    "2024-01-02 03:04:05.12345", "2024-01-02 03:04:05.123456", "9999-12-31 23:59:59.999999", "1000-01-01 00:00:00.000000",
    "0001-01-01 00:00:00",
    # zero dates and invalid ones: PyMySQL gives the text back
    "0000-00-00 00:00:00", "0000-00-00 00:00:00.000", "2024-00-10 01:02:03", "2024-02-31 00:00:00", "2024-13-01 00:00:00",
    "0000-00-00", "2024-02-30", "2024-01-02",
    # shapes the server does not send for these types: PyMySQL's own parser decides
    "2024-01-02 03:04:05+01:00", "2024-01-02T03:04:05", "x" * 19, "2024-01-02 03:04:05.1234567", "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_fast_conversions_match_pymysql(text):
    for ours, theirs in ((_fast_datetime, converters.convert_datetime), (_fast_date, converters.convert_date)):
        expected = theirs(text)
        got = ours(text)
        assert got == expected and type(got) is type(expected)


def test_only_the_date_types_are_replaced():
    changed = {k for k, v in SNAPSHOT_CONVERSIONS.items() if converters.conversions.get(k) is not v}
    from pymysql.constants import FIELD_TYPE

    assert changed == {FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.DATE}
