"""The bank's rule parameters: thresholds from the regulations and configurable limits.

DOMAIN.md fixes the thresholds: a withdrawal of more than 50,000 CNY by someone other than the
depositor needs both identity documents checked; a cash withdrawal of 200,000 CNY or more needs
an appointment made at least one calendar day earlier. Daily limits per account (cash out,
transfers) are the bank's choice: off unless configured. Calendar days are China Standard
Time (UTC+8, no daylight saving), whatever the host's clock zone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from common.money import yuan

#: The bank's calendar: China Standard Time.
BANK_TZ = dt.timezone(dt.timedelta(hours=8), "CST")


def bank_day(moment: dt.datetime) -> dt.date:
    """The bank's calendar day at ``moment`` (a naive moment is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(BANK_TZ).date()


@dataclass(frozen=True, slots=True)
class Policy:
    """Rule parameters, in fen.

    Attributes:
        agent_identity_over: a withdrawal above this by someone other than the holder needs
            the withdrawer's and the holder's documents (and above it the withdrawer always
            shows one).
        appointment_from: a cash withdrawal of this or more needs an appointment.
        daily_cash_out_limit: cash an account may pay out per bank day (None: no limit).
        daily_transfer_limit: what an account may transfer out per bank day (None: no limit).
        max_appointments: appointments an account may hold at once.
        interest_rate_bp: the demand-deposit annual interest rate in basis points (0: none).
    """

    agent_identity_over: int = yuan(50_000)
    appointment_from: int = yuan(200_000)
    daily_cash_out_limit: int | None = None
    daily_transfer_limit: int | None = None
    max_appointments: int = 4
    interest_rate_bp: int = 0

    def __post_init__(self) -> None:
        limits = (self.daily_cash_out_limit, self.daily_transfer_limit)
        if any(limit is not None and limit < 0 for limit in limits):
            raise ValueError("daily limits must not be negative")
        if self.agent_identity_over < 0 or self.appointment_from <= 0:
            raise ValueError("thresholds must be positive")
        if self.max_appointments < 1 or self.interest_rate_bp < 0:
            raise ValueError("max_appointments >= 1 and interest_rate_bp >= 0 are required")


DEFAULT_POLICY = Policy()
