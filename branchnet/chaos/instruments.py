"""Instruments of the load scenarios: the host process's memory, and a deposit load sent
through the branches' own request clients (checked like the terminals' requests)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from branch_node import TIMEOUT, Branch, Outcome
from branch_node.resident_id import resident_id
from branch_node.terminal import teller_id
from branchnet.loadnet import rss_mb
from common.ids import card_number, request_id
from common.money import yuan
from common.replies import Reply
from common.requests import Deposit, IdDocument, OpenAccount, RequestBase, encode_request
from common.results import ResultCode

if TYPE_CHECKING:
    from branchnet.chaos.scenarios import _Run

#: Terminal ids the deposit load speaks for (the workload's terminals count from 01).
LOAD_TERMINALS = tuple(f"{n}" for n in range(90, 98))


def host_pid(run: _Run) -> int | None:
    """The running host process's id (None while it is down)."""
    process = run.nodes.running.get("host")
    return process.pid if process is not None and process.poll() is None else None


@dataclass(slots=True)
class HostRss:
    """The host process's resident memory, sampled while the workload runs."""

    samples: list[tuple[float, float]] = field(default_factory=list)

    async def sample(self, run: _Run, every_s: float = 0.25) -> None:
        started = time.monotonic()
        while not run.finished.done():
            pid = host_pid(run)
            megabytes = rss_mb(pid) if pid is not None else None
            if megabytes is not None:
                self.samples.append((time.monotonic() - started, megabytes))
            await asyncio.wait({run.finished}, timeout=every_s)

    def summary(self) -> dict[str, Any]:
        """Max, and whether the second half of the run stayed within 25 % (+16 MB) of the
        first half's max: memory that levels off rather than grows with the backlog."""
        if not self.samples:
            return {"samples": 0}
        end = self.samples[-1][0]
        first = max((mb for t, mb in self.samples if t <= end / 2), default=0.0)
        second = max((mb for t, mb in self.samples if t > end / 2), default=first)
        return {
            "samples": len(self.samples),
            "max_mb": round(max(mb for _, mb in self.samples), 1),
            "first_half_max_mb": round(first, 1),
            "second_half_max_mb": round(second, 1),
            "last_mb": round(self.samples[-1][1], 1),
            "bounded": second <= first * 1.25 + 16,
        }


@dataclass(slots=True)
class DepositLoad:
    """Deposits into accounts of its own, sent through the branches' clients (``send``)."""

    run: _Run
    sequence: Callable[[], int] = field(default_factory=lambda: itertools.count(1).__next__)
    accounts: list[tuple[Branch, str, str]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: int = 0

    def base(self, branch: Branch, terminal: str, budget_s: float) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        return {
            "request_id": request_id(branch.branch_id, terminal, self.sequence()),
            "branch_id": branch.branch_id,
            "teller_id": teller_id(branch.branch_id, terminal),
            "terminal_id": terminal,
            "origin_time": now,
            "deadline": now + dt.timedelta(seconds=budget_s),
        }

    def send(
        self,
        branch: Branch,
        request: RequestBase,
        account: str,
        amount: int,
        expected: ResultCode = ResultCode.APPROVED,
    ) -> None:
        sent = time.monotonic()
        future = branch.client.send(request.request_id, encode_request(request))
        self.in_flight += 1

        def settled(done: asyncio.Future[Reply]) -> None:
            self.in_flight -= 1
            error = None if done.cancelled() else done.exception()
            reply = None if done.cancelled() or error is not None else done.result()
            moved = (reply.amount or amount) if reply is not None and reply.approved else 0
            self.outcomes.append(
                Outcome(
                    request_id=request.request_id,
                    kind=str(getattr(request, "kind", "")),
                    result=str(reply.result) if reply is not None else TIMEOUT,
                    amount=moved,
                    cash_in=moved,
                    cash_out=0,
                    account=account,
                    latency_s=time.monotonic() - sent,
                    sent_at=request.origin_time,
                    expected=expected.value,
                )
            )

        future.add_done_callback(settled)

    async def open_accounts(self) -> None:
        rng = random.Random(self.run.config.seed)
        for branch in self.run.branches:
            budget = branch.client.config.budget_s
            for terminal in LOAD_TERMINALS:
                number = card_number(branch.branch_id, terminal, 1)
                document = resident_id(
                    rng, born_after=dt.date(1950, 1, 1), born_before=dt.date(2000, 1, 1)
                )
                opening = OpenAccount(
                    **self.base(branch, terminal, budget),
                    account=number,
                    customer_name=f"Overload {branch.branch_id}-{terminal}",
                    id_document=IdDocument(id_type="resident_id", number=document),
                )
                self.send(branch, opening, number, 0)
                self.accounts.append((branch, terminal, number))
        await self.settle(60)
        opened = {o.account for o in self.outcomes if o.result == "00"}
        self.accounts = [a for a in self.accounts if a[2] in opened]

    def deposit(self, rng: random.Random) -> None:
        branch, terminal, number = rng.choice(self.accounts)
        amount = yuan(rng.randint(1, 20))
        request = Deposit(
            **self.base(branch, terminal, branch.client.config.budget_s),
            account=number,
            amount=amount,
        )
        self.send(branch, request, number, amount)

    async def settle(self, timeout_s: float) -> None:
        """Wait until every request sent is answered or timed out."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
