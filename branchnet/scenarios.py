"""The scenario library: one named script per rule of the regulations, and the seed's case.

Each scenario keys requests at a counter of branch 0001 and states the result code and rule
it expects for every step; :func:`branchnet.scenario_runner.run_scenario` runs it through a
real network and reports. ``chen-case`` replays the court case in DOMAIN.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from branchnet.scenario_runner import Scenario, ScenarioFailed, Script
from common.authorisation import StaffKey
from common.id_documents import check_character
from common.money import yuan
from common.requests import IdDocument
from common.results import ResultCode
from host_node.policy import Policy

OK = ResultCode.APPROVED
PIN, WRONG_PIN = "360513", "111222"


def resident(order: int, born: str = "19700101", division: str = "110101") -> IdDocument:
    """A valid resident ID card for a scenario's person number ``order``."""
    first17 = f"{division}{born}{order:03d}"
    return IdDocument(id_type="resident_id", number=first17 + check_character(first17))


CHEN = resident(101, "19620315")  # the depositor
ZHANG = resident(202, "19750808", "310101")  # the man who took the money
STRANGER = resident(303, "19800101", "440103")  # the second number on the slip: not Chen's


async def _open(script: Script, who: IdDocument, deposit: int, pin: str | None = PIN) -> str:
    account = script.card()
    reply = await script.step(
        "open the account",
        "open_account",
        expect=OK,
        pin=pin,
        account=account,
        customer_name="陈某",
        id_document=who,
        initial_deposit=deposit,
    )
    if reply is None or not reply.approved:
        raise ScenarioFailed("the account could not be opened")
    return account


async def chen_case(script: Script) -> None:
    """600,000 CNY deposited; another person takes 599,000 in two card withdrawals at the
    counter with the right PIN, no appointment, showing his own ID and one not Chen's."""
    account = await _open(script, CHEN, yuan(600_000))
    script.next_day(10)  # 16 March
    for label, amount, days_after in (("first", 300_000, 2), ("second", 299_000, 0)):
        await script.step(
            f"{label} withdrawal by Zhang with card and PIN, a stranger's ID as the holder's",
            "withdraw",
            expect=ResultCode.IDENTITY_CHECK_FAILED,
            rule="large_cash_identity",
            pin=PIN,
            account=account,
            amount=yuan(amount),
            withdrawer=ZHANG,
            holder=STRANGER,
        )
        script.next_day(days_after)  # 18 March
    reply = await script.step(
        "Chen checks her balance", "balance", expect=OK, pin=PIN, account=account
    )
    if reply is None or reply.balance != yuan(600_000):
        raise ScenarioFailed("Chen's 600,000 CNY is not all there")


async def large_cash_appointment(script: Script) -> None:
    """200,000 CNY or more in cash needs an appointment made a calendar day before; used up."""
    account = await _open(script, CHEN, yuan(800_000))
    cash: dict[str, Any] = {"pin": PIN, "account": account, "withdrawer": CHEN}
    await script.step(
        "250,000 without an appointment",
        "withdraw",
        expect=ResultCode.APPOINTMENT_REQUIRED,
        rule="large_cash_appointment",
        amount=yuan(250_000),
        **cash,
    )
    await script.step(
        "an appointment for today",
        "make_appointment",
        expect=ResultCode.INVALID_TRANSACTION,
        rule="appointment_date",
        account=account,
        amount=yuan(250_000),
        date=script.today,
    )
    tomorrow = script.today + dt.timedelta(days=1)
    await script.step(
        "an appointment for tomorrow",
        "make_appointment",
        expect=OK,
        account=account,
        amount=yuan(250_000),
        date=tomorrow,
    )
    await script.step(
        "250,000 the same day",
        "withdraw",
        expect=ResultCode.APPOINTMENT_REQUIRED,
        rule="large_cash_appointment",
        amount=yuan(250_000),
        **cash,
    )
    script.next_day()
    await script.step(
        "300,000: more than booked",
        "withdraw",
        expect=ResultCode.APPOINTMENT_REQUIRED,
        rule="large_cash_appointment",
        amount=yuan(300_000),
        **cash,
    )
    await script.step(
        "250,000 on the booked day, paid by the teller alone",
        "withdraw",
        expect=ResultCode.SUPERVISOR_REQUIRED,
        rule="supervisor_authorisation",
        amount=yuan(250_000),
        **cash,
    )
    await script.step(
        "250,000 on the booked day, authorised by the supervisor",
        "withdraw",
        expect=OK,
        rule="large_cash_appointment",
        amount=yuan(250_000),
        supervisor=script.supervisor,
        **cash,
    )
    await script.step(
        "250,000 again: the appointment is used up",
        "withdraw",
        expect=ResultCode.APPOINTMENT_REQUIRED,
        amount=yuan(250_000),
        **cash,
    )
    await script.step(
        "199,999.99 needs none", "withdraw", expect=OK, amount=yuan(199_999, 99), **cash
    )


async def agent_withdrawal(script: Script) -> None:
    """Over 50,000 CNY by someone other than the holder: both documents, checked against the
    customer record."""
    account = await _open(script, CHEN, yuan(300_000))
    cash: dict[str, Any] = {"pin": PIN, "account": account, "amount": yuan(60_000)}
    refused: dict[str, Any] = {
        "expect": ResultCode.IDENTITY_CHECK_FAILED,
        "rule": "large_cash_identity",
    }
    await script.step("no document at all", "withdraw", **refused, **cash)
    await script.step("the agent's document only", "withdraw", withdrawer=ZHANG, **refused, **cash)
    await script.step(
        "the agent's and a stranger's",
        "withdraw",
        withdrawer=ZHANG,
        holder=STRANGER,
        **refused,
        **cash,
    )
    await script.step(
        "the agent's and the holder's, paid by the teller alone",
        "withdraw",
        expect=ResultCode.SUPERVISOR_REQUIRED,
        rule="supervisor_authorisation",
        withdrawer=ZHANG,
        holder=CHEN,
        **cash,
    )
    await script.step(
        "the agent's and the holder's, authorised by the supervisor",
        "withdraw",
        expect=OK,
        withdrawer=ZHANG,
        holder=CHEN,
        supervisor=script.supervisor,
        **cash,
    )
    await script.step("the holder herself", "withdraw", expect=OK, withdrawer=CHEN, **cash)
    await script.step(
        "50,000 exactly needs no document",
        "withdraw",
        expect=OK,
        pin=PIN,
        account=account,
        amount=yuan(50_000),
    )


async def identity_documents(script: Script) -> None:
    """Opening needs a valid resident ID, military officer's card or passport; an account
    without a PIN (passbook) may not make card transfers."""
    bad: dict[str, Any] = {"expect": ResultCode.IDENTITY_CHECK_FAILED, "rule": "id_document"}
    wrong_check = CHEN.number[:17] + ("0" if CHEN.number[17] != "0" else "1")
    cases = (
        (
            "a resident ID with a wrong check character",
            IdDocument(id_type="resident_id", number=wrong_check),
            bad,
        ),
        ("a resident ID born on 30 February", resident(5, "19900230"), bad),
        (
            "a malformed officer's card",
            IdDocument(id_type="military_officer", number="2005123"),
            bad,
        ),
        ("a malformed passport", IdDocument(id_type="passport", number="1234"), bad),
        (
            "a military officer's card",
            IdDocument(id_type="military_officer", number="南字第2005123号"),
            {"expect": OK},
        ),
        ("a passport", IdDocument(id_type="passport", number="E12345678"), {"expect": OK}),
    )
    for label, document, expected in cases:
        await script.step(
            label,
            "open_account",
            pin=PIN,
            account=script.card(),
            customer_name="客户",
            id_document=document,
            **expected,
        )
    passbook = await _open(script, resident(7), yuan(1_000), pin=None)
    card = await _open(script, resident(8), yuan(1_000))
    await script.step(
        "a card transfer from the passbook account",
        "transfer",
        expect=ResultCode.NOT_PERMITTED,
        rule="passbook",
        pin=PIN,
        account=passbook,
        to_account=card,
        amount=yuan(100),
    )


async def court_freeze(script: Script) -> None:
    """Freeze, unfreeze and deduct need a legal authority and a supervisor; frozen money stays."""
    account = await _open(script, CHEN, yuan(10_000))
    order: dict[str, Any] = {"account": account, "authority_ref": "(2002)京0101执123号"}
    supervisor = script.supervisor
    await script.step(
        "a freeze by the teller alone",
        "freeze",
        expect=ResultCode.SUPERVISOR_REQUIRED,
        rule="supervisor_authorisation",
        **order,
    )
    await script.step(
        "a freeze the supervisor keys and authorises alone",
        "freeze",
        expect=ResultCode.SUPERVISOR_REQUIRED,
        rule="authorisation_refused",
        supervisor=supervisor,
        teller_id=supervisor.staff_id,
        role="supervisor",
        **order,
    )
    await script.step(
        "a freeze with a forged supervisor signature",
        "freeze",
        expect=ResultCode.SUPERVISOR_REQUIRED,
        rule="authorisation_signature",
        supervisor=StaffKey(supervisor.staff_id, Ed25519PrivateKey.generate()),
        **order,
    )
    await script.step(
        "a freeze without a document number",
        "freeze",
        expect=ResultCode.LEGAL_AUTHORITY_REQUIRED,
        rule="legal_authority",
        account=account,
        authority_ref="police asked",
        supervisor=supervisor,
    )
    await script.step("a full freeze", "freeze", expect=OK, supervisor=supervisor, **order)
    await script.step(
        "withdraw from the frozen account",
        "withdraw",
        expect=ResultCode.RESTRICTED,
        rule="freeze",
        pin=PIN,
        account=account,
        amount=yuan(100),
    )
    await script.step(
        "a deposit still comes in", "deposit", expect=OK, account=account, amount=yuan(500)
    )
    await script.step("unfreeze", "unfreeze", expect=OK, supervisor=script.supervisor, **order)
    await script.step(
        "hold 6,000",
        "freeze",
        expect=OK,
        amount=yuan(6_000),
        supervisor=script.supervisor,
        **order,
    )
    await script.step(
        "withdraw into the held money",
        "withdraw",
        expect=ResultCode.RESTRICTED,
        rule="freeze",
        pin=PIN,
        account=account,
        amount=yuan(4_501),
    )
    await script.step(
        "withdraw what the hold leaves",
        "withdraw",
        expect=OK,
        pin=PIN,
        account=account,
        amount=yuan(4_500),
    )
    await script.step(
        "deduct the held 6,000",
        "deduct",
        expect=OK,
        amount=yuan(6_000),
        supervisor=script.supervisor,
        **order,
    )
    reply = await script.step(
        "balance after the deduction", "balance", expect=OK, pin=PIN, account=account
    )
    if reply is None or reply.balance != 0:
        raise ScenarioFailed("the deduction left the wrong balance")


async def daily_limits(script: Script) -> None:
    """Daily cash-out and transfer limits per account (configured at 20,000 and 10,000)."""
    account = await _open(script, CHEN, yuan(100_000))
    other = await _open(script, resident(9), 0)
    out: dict[str, Any] = {"pin": PIN, "account": account}
    await script.step("15,000 in cash", "withdraw", expect=OK, amount=yuan(15_000), **out)
    await script.step(
        "6,000 more in cash the same day",
        "withdraw",
        expect=ResultCode.OVER_LIMIT,
        rule="daily_cash_out_limit",
        amount=yuan(6_000),
        **out,
    )
    await script.step(
        "5,000 more: exactly the limit", "withdraw", expect=OK, amount=yuan(5_000), **out
    )
    await script.step(
        "a 10,001 transfer",
        "transfer",
        expect=ResultCode.OVER_LIMIT,
        rule="daily_transfer_limit",
        to_account=other,
        amount=yuan(10_001),
        **out,
    )
    await script.step(
        "a 10,000 transfer", "transfer", expect=OK, to_account=other, amount=yuan(10_000), **out
    )
    script.next_day()
    await script.step(
        "6,000 in cash the next day", "withdraw", expect=OK, amount=yuan(6_000), **out
    )


async def pin_lockout(script: Script) -> None:
    """Three wrong PINs lock the PIN; a supervisor (not the teller) unlocks it."""
    account = await _open(script, CHEN, yuan(1_000))
    ask: dict[str, Any] = {"account": account}
    await script.step(
        "wrong PIN 1", "balance", expect=ResultCode.WRONG_PIN, rule="pin", pin=WRONG_PIN, **ask
    )
    await script.step(
        "wrong PIN 2", "balance", expect=ResultCode.WRONG_PIN, rule="pin", pin=WRONG_PIN, **ask
    )
    await script.step(
        "wrong PIN 3 locks",
        "balance",
        expect=ResultCode.PIN_TRIES_EXCEEDED,
        rule="pin_lockout",
        pin=WRONG_PIN,
        **ask,
    )
    await script.step(
        "the right PIN, locked",
        "withdraw",
        expect=ResultCode.PIN_TRIES_EXCEEDED,
        rule="pin_lockout",
        pin=PIN,
        amount=yuan(10),
        **ask,
    )
    await script.step(
        "the teller unlocks alone",
        "unlock_pin",
        expect=ResultCode.SUPERVISOR_REQUIRED,
        rule="supervisor_authorisation",
        **ask,
    )
    await script.step(
        "the supervisor unlocks", "unlock_pin", expect=OK, supervisor=script.supervisor, **ask
    )
    await script.step("the right PIN again", "withdraw", expect=OK, pin=PIN, amount=yuan(10), **ask)


async def closing(script: Script) -> None:
    """Closing pays out the balance and refuses everything after (62)."""
    account = await _open(script, CHEN, yuan(1_234))
    reply = await script.step(
        "close", "close_account", expect=OK, rule="closed", pin=PIN, account=account
    )
    if reply is None or reply.amount != yuan(1_234):
        raise ScenarioFailed("closing did not pay out the balance")
    closed: dict[str, Any] = {"expect": ResultCode.RESTRICTED, "rule": "closed", "account": account}
    await script.step("deposit after closing", "deposit", amount=yuan(1), **closed)
    await script.step("withdraw after closing", "withdraw", pin=PIN, amount=yuan(1), **closed)
    await script.step("balance after closing", "balance", pin=PIN, **closed)
    await script.step(
        "appointment after closing",
        "make_appointment",
        amount=yuan(300_000),
        date=script.today + dt.timedelta(days=1),
        **closed,
    )


async def staff_roles(script: Script) -> None:
    """Roles checked on the host's staff table, and proven by staff signatures; customer
    queries need a purpose and, from a teller, a supervisor's signature; an auditor queries but
    never moves money."""
    account = await _open(script, CHEN, yuan(1_000))
    query: dict[str, Any] = {"account": account, "purpose": "对账 statement check"}
    auditor: dict[str, Any] = {"teller_id": script.auditor.staff_id, "role": "auditor"}
    signed_by_auditor: dict[str, Any] = {**auditor, "supervisor": script.auditor}
    await script.step(
        "a teller's customer query alone",
        "customer_query",
        expect=ResultCode.SUPERVISOR_REQUIRED,
        rule="supervisor_authorisation",
        **query,
    )
    reply = await script.step(
        "a teller's customer query authorised by the supervisor",
        "customer_query",
        expect=OK,
        rule="customer_query",
        supervisor=script.supervisor,
        **query,
    )
    if reply is None or reply.balance != yuan(1_000):
        raise ScenarioFailed("the authorised query did not answer the balance")
    await script.step(
        "an auditor's customer query, signed by the auditor",
        "customer_query",
        expect=OK,
        rule="customer_query",
        **signed_by_auditor,
        **query,
    )
    await script.step(
        "someone at a terminal claims to be the auditor (unsigned)",
        "customer_query",
        expect=ResultCode.ROLE_NOT_PERMITTED,
        rule="staff_signature",
        **auditor,
        **query,
    )
    await script.step(
        "a query without a stated purpose",
        "customer_query",
        expect=ResultCode.ROLE_NOT_PERMITTED,
        rule="query_purpose",
        account=account,
        purpose=" ",
        **signed_by_auditor,
    )
    await script.step(
        "the auditor pays in cash",
        "deposit",
        expect=ResultCode.ROLE_NOT_PERMITTED,
        rule="role_permission",
        account=account,
        amount=yuan(100),
        **signed_by_auditor,
    )
    await script.step(
        "a teller claims to be a supervisor",
        "deposit",
        expect=ResultCode.ROLE_NOT_PERMITTED,
        rule="staff_role",
        account=account,
        amount=yuan(100),
        role="supervisor",
    )


INTEREST_BP = 35  # 0.35% a year, the demand-deposit rate


def daily_interest(balances: list[tuple[dt.date, int]], until: dt.date, rate_bp: int) -> int:
    """The interest a bank pays on ``balances`` (changes as (day, new balance), first the
    opening) up to ``until``: accrued day by day on each closing balance, posted on the 20th of
    March, June, September and December. An independent day-by-day model of the host's rule."""
    changes = dict(balances)
    day, principal, units, paid = balances[0][0], 0, 0, 0
    while day < until:
        principal = changes.get(day, principal)
        units += (principal + paid) * rate_bp
        if day.day == 20 and day.month in (3, 6, 9, 12):
            fen, units = divmod(units, 10_000 * 365)
            paid += fen
        day += dt.timedelta(days=1)
    return paid


async def interest(script: Script) -> None:
    """Deposits earn interest: accrued daily on the closing balance, posted quarterly on the
    20th of March, June, September and December; a simulated year in a few requests."""
    account = await _open(script, CHEN, yuan(100_000))
    opened = script.today
    script.next_day(100)
    deposited = script.today
    await script.step(
        "a deposit 100 days later", "deposit", expect=OK, account=account, amount=yuan(50_000)
    )
    script.next_day(265)
    reply = await script.step(
        "the balance a year after opening", "balance", expect=OK, pin=PIN, account=account
    )
    paid = daily_interest(
        [(opened, yuan(100_000)), (deposited, yuan(150_000))], script.today, INTEREST_BP
    )
    if reply is None or reply.balance != yuan(150_000) + paid or paid <= 0:
        got = None if reply is None else reply.balance
        raise ScenarioFailed(f"balance {got} fen, expected {yuan(150_000) + paid} with interest")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "chen-case", "the seed's court case: the host refuses both withdrawals", chen_case
        ),
        Scenario(
            "large-cash-appointment",
            "200,000 CNY or more needs an appointment the day before (76) and a supervisor (63)",
            large_cash_appointment,
        ),
        Scenario(
            "agent-withdrawal",
            "over 50,000 CNY by another person: both IDs checked (77) and a supervisor (63)",
            agent_withdrawal,
        ),
        Scenario(
            "identity-documents",
            "opening needs a valid ID document (77); passbook: no card transfers (57)",
            identity_documents,
        ),
        Scenario(
            "court-freeze",
            "freeze/unfreeze/deduct need a legal authority (64) and a supervisor (63)",
            court_freeze,
        ),
        Scenario(
            "daily-limits",
            "daily cash-out and transfer limits per account (61)",
            daily_limits,
            Policy(daily_cash_out_limit=yuan(20_000), daily_transfer_limit=yuan(10_000)),
        ),
        Scenario("pin-lockout", "three wrong PINs lock (75); a supervisor unlocks", pin_lockout),
        Scenario("closing", "closing pays out and refuses everything after (62)", closing),
        Scenario(
            "staff-roles",
            "roles on the staff table, signed (58); customer queries permissioned (63)",
            staff_roles,
        ),
        Scenario(
            "interest",
            "a year of daily accrual and quarterly postings in seconds",
            interest,
            Policy(interest_rate_bp=INTEREST_BP),
        ),
    )
}
