"""The build refuses to publish output that does not account for every row it read."""

import pytest

from pipeline.build_manifest import AccountingError, check_accounting


def test_matching_counts_pass():
    check_accounting({"records": 10, "documents": 7}, rows_read=10)


@pytest.mark.parametrize("rows_read", [9, 11])
def test_a_lost_or_invented_row_stops_the_publish_with_the_numbers(rows_read):
    with pytest.raises(AccountingError, match=rf"read {rows_read} rows, but the output accounts for 10 \(7 kept \+ 3 dropped\)"):
        check_accounting({"records": 10, "documents": 7}, rows_read=rows_read)
