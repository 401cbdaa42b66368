"""Interest: posting days and the stretches a lazy close cuts the calendar into."""

from __future__ import annotations

import datetime as dt

from host_node.interest import Stretch, is_posting_day, posting_days, stretches

D = dt.date


def test_posting_days_are_the_20th_of_each_quarters_last_month() -> None:
    assert list(posting_days(D(2002, 3, 5), D(2003, 3, 20))) == [
        D(2002, 3, 20), D(2002, 6, 20), D(2002, 9, 20), D(2002, 12, 20), D(2003, 3, 20),
    ]  # fmt: skip
    assert list(posting_days(D(2002, 3, 20), D(2002, 6, 19))) == []
    assert is_posting_day(D(2002, 12, 20)) and not is_posting_day(D(2002, 11, 20))


def test_stretches_cover_every_day_once_and_end_on_posting_days() -> None:
    cut = stretches(D(2002, 3, 5), D(2002, 7, 1))
    assert cut == [
        Stretch(D(2002, 3, 5), D(2002, 3, 20), True),
        Stretch(D(2002, 3, 20), D(2002, 6, 20), True),
        Stretch(D(2002, 6, 20), D(2002, 7, 1), False),
    ]
    assert sum(s.days for s in cut) == (D(2002, 7, 1) - D(2002, 3, 5)).days
    assert stretches(D(2002, 7, 1), D(2002, 7, 1)) == []
