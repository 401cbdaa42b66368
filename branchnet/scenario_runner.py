"""Running a named scenario through a real network and reporting what each step met.

A scenario (see :mod:`branchnet.scenarios`) is a script of counter requests with the result
and rule it expects for each. It runs against a fresh network (crypto node, host, one
branch's request client and PIN pads; the embedded bus or RabbitMQ) whose host runs on a
:class:`~common.clock.SimulationClock` the script moves forward by whole days. The report
lists every step with its expected and actual result and rule, the reason and the identity
documents the journal says were checked (masked), and the store's reconciliation checks.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from branch_node import Desk, RequestTimeout
from branchnet.network import Network, NetworkConfig
from common.authorisation import StaffKey
from common.clock import SimulationClock
from common.replies import Reply
from common.results import ResultCode
from host_node import HostConfig, check_store, ledger_path
from host_node.policy import BANK_TZ, DEFAULT_POLICY, Policy, bank_day
from host_node.staff import auditor_id, supervisor_id
from host_node.store import connect_read_only, journal_entries

BRANCH = "0001"
#: Where every scenario's simulated calendar starts: the morning the seed's depositor came in.
START = dt.datetime(2002, 3, 6, 9, 0, tzinfo=BANK_TZ)


@dataclass(slots=True)
class StepResult:
    """One request of a scenario, as expected and as answered."""

    label: str
    kind: str
    request_id: str
    expected: str
    result: str
    expected_rule: str | None
    rule: str | None
    reason: str
    ok: bool
    day: str
    balance: int | None = None
    identities: list[str] = field(default_factory=list)


class ScenarioFailed(AssertionError):
    """A scenario's own consistency check failed (not a step's result: those are reported)."""


class Script:
    """What a scenario's body works with: a desk at branch 0001, the host's calendar and the
    staff keys of the branch's supervisor (to sign authorisations) and auditor."""

    def __init__(
        self, desk: Desk, clock: SimulationClock, supervisor: StaffKey, auditor: StaffKey
    ) -> None:
        self.desk = desk
        self.clock = clock
        self.steps: list[StepResult] = []
        self.supervisor = supervisor
        self.auditor = auditor

    @property
    def today(self) -> dt.date:
        return bank_day(self.clock.now())

    def next_day(self, days: int = 1) -> None:
        """Move the host's calendar forward ``days`` days."""
        self.clock.advance(dt.timedelta(days=days))

    def card(self) -> str:
        return self.desk.issue_card()

    async def step(
        self,
        label: str,
        kind: str,
        *,
        expect: ResultCode,
        rule: str | None = None,
        pin: str | None = None,
        new_pin: str | None = None,
        supervisor: StaffKey | None = None,
        **fields: Any,
    ) -> Reply | None:
        """Send one request (signed by ``supervisor`` when given) and record whether its result
        (and rule, when given) matched."""
        request = self.desk.request(kind, pin=pin, new_pin=new_pin, supervisor=supervisor, **fields)
        try:
            reply: Reply | None = await self.desk.submit(request)
        except RequestTimeout:
            reply = None
        result = reply.result.value if reply else "timeout"
        got_rule = reply.rule if reply else None
        ok = result == expect.value and (rule is None or got_rule == rule)
        self.steps.append(
            StepResult(
                label=label,
                kind=kind,
                request_id=request.request_id,
                expected=expect.value,
                result=result,
                expected_rule=rule,
                rule=got_rule,
                reason=reply.reason if reply else "no reply",
                ok=ok,
                day=self.today.isoformat(),
                balance=reply.balance if reply else None,
            )
        )
        return reply


Body = Callable[[Script], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named script: what it shows, the policy the host runs it under, and its steps."""

    name: str
    summary: str
    body: Body
    policy: Policy = DEFAULT_POLICY


async def run_scenario(
    scenario: Scenario, *, amqp_url: str | None = None, data_dir: Path | None = None
) -> dict[str, Any]:
    """Run ``scenario`` on a fresh network and return its report (``ok`` says if every step
    met its expectation and the books reconcile)."""
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"branchnet-{scenario.name}-"))
    clock = SimulationClock(START, rate=1.0)
    config = NetworkConfig(
        data_dir=data_dir,
        branch_ids=(BRANCH,),
        terminals=1,
        amqp_url=amqp_url,
        host_config=HostConfig(policy=scenario.policy),
        host_clock=clock,
    )
    error: str | None = None
    async with Network(config) as network:
        supervisor = StaffKey.load(data_dir, supervisor_id(BRANCH))
        auditor = StaffKey.load(data_dir, auditor_id(BRANCH))
        script = Script(network.branches[0].desk("01"), clock, supervisor, auditor)
        try:
            await scenario.body(script)
        except ScenarioFailed as failure:
            error = str(failure)
    store = ledger_path(data_dir)
    _add_identities(store, script.steps)
    checks = {name: {"ok": c.ok, "detail": c.detail} for name, c in check_store(store).items()}
    reconciled = all(c["ok"] for c in checks.values())
    failures = [s.label for s in script.steps if not s.ok]
    return {
        "scenario": scenario.name,
        "summary": scenario.summary,
        "ok": not failures and reconciled and error is None,
        "failures": failures,
        "error": error,
        "steps": [asdict(s) for s in script.steps],
        "stopped_by": {s.label: s.rule for s in script.steps if s.result not in ("00", "timeout")},
        "reconciliation": {"ok": reconciled, "checks": checks},
        "bus": "amqp" if amqp_url else "embedded",
        "data_dir": str(data_dir),
    }


def _add_identities(store: Path, steps: list[StepResult]) -> None:
    """Copy each step's journaled identity checks (masked) into its result."""
    wanted = {s.request_id: s for s in steps}
    connection = connect_read_only(store)
    try:
        for entry in journal_entries(connection):
            step = wanted.get(entry.request_id)
            if step is not None:
                step.identities = list(entry.identities)
    finally:
        connection.close()
