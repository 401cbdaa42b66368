"""A branch: its terminals serving customers concurrently through one request client.

:class:`Branch` opens the branch's durable counters, loads its PIN pads (resuming each pad's
KSN counter from the state), declares its reply queue and runs every terminal's workload for
a while. The :class:`BranchReport` holds every :class:`~branch_node.terminal.Outcome` and,
per request id, every distinct result any reply carried, so the orchestrator can prove that no
request was answered two different ways.

The bus is the caller's: connect it before :meth:`Branch.start`, close it after
:meth:`Branch.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from branch_node.client import ClientConfig, ClientStatistics, RequestClient
from branch_node.desk import Desk
from branch_node.errors import BranchError
from branch_node.pinpad import load_pinpads
from branch_node.session import BranchSession
from branch_node.state import BRANCH_WIDE, DEFAULT_BLOCK, BranchState, Counter
from branch_node.terminal import TIMEOUT, Outcome, PinEncryptor, Terminal
from branch_node.workload import WorkloadConfig, WorkloadModel
from common.authorisation import StaffKey
from common.bus import Bus
from common.ids import card_number, terminal_ids
from common.logs import get_logger
from common.replies import Reply
from common.requests import Role

_log = get_logger(__name__)
_DEFAULT_WORKLOAD = WorkloadConfig()
_DEFAULT_CLIENT = ClientConfig()
#: Builds a branch's PIN pads by terminal id, given each terminal's last used KSN counter.
PinPadLoader = Callable[[Path, str, Mapping[str, int]], Mapping[str, PinEncryptor]]


@dataclass(frozen=True, slots=True)
class BranchStatistics:
    """A live snapshot for progress displays.

    ``sent`` counts requests handed to the client; ``answered`` those with a reply;
    ``by_result`` answered requests per result code; ``surprises`` answers the workload model
    did not predict.
    """

    sent: int
    answered: int
    timeouts: int
    by_result: Mapping[str, int]
    in_flight: int
    surprises: int
    client: ClientStatistics


@dataclass(frozen=True, slots=True)
class BranchReport:
    """What one :meth:`Branch.run` did."""

    branch_id: str
    outcomes: tuple[Outcome, ...]
    statistics: BranchStatistics
    #: Every distinct result seen per request id (duplicates and late replies included).
    results_seen: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def conflicting(self) -> list[str]:
        """Request ids answered with more than one result."""
        return sorted(rid for rid, results in self.results_seen.items() if len(results) > 1)


class Branch:
    """One branch outlet: terminals, PIN pads, workload, request client.

    Args:
        bus: a connected bus.
        branch_id: four digits, registered with the host.
        data_dir: holds ``branches/<id>.json`` (counters) and the PIN pad keys.
        terminals: how many counter positions serve at once.
        seed: seeds every terminal's workload (each terminal draws its own stream).
        workload: how the customers behave.
        client_config: batching, timeouts and retries of the request client.
        pinpad_loader: builds the pads from the key files, given each terminal's last used KSN
            counter; by default :func:`branch_node.pinpad.load_pinpads`.
        state_block: counter values reserved per state write.
        session: secure envelopes with the host (None: plain frames); frame sequences then
            come from the durable state.
        supervisor: the branch supervisor's staff key: the terminals have them sign what a
            teller alone may not do (the workload's customer queries).
    """

    def __init__(
        self,
        bus: Bus,
        branch_id: str,
        *,
        data_dir: Path,
        terminals: int = 4,
        seed: int = 1,
        workload: WorkloadConfig = _DEFAULT_WORKLOAD,
        client_config: ClientConfig = _DEFAULT_CLIENT,
        pinpad_loader: PinPadLoader | None = None,
        state_block: int = DEFAULT_BLOCK,
        session: BranchSession | None = None,
        supervisor: StaffKey | None = None,
    ) -> None:
        if not 1 <= terminals <= 99:
            raise ValueError("a branch has 1..99 terminals")
        self.branch_id = branch_id
        self.data_dir = data_dir
        self.terminal_ids = tuple(terminal_ids(terminals))
        self.seed = seed
        self.workload = workload
        self.supervisor = supervisor
        if workload.mix.customer_query > 0 and supervisor is None:
            raise BranchError("a workload with customer queries needs the supervisor's staff key")
        self.client = RequestClient.from_config(
            bus,
            branch_id,
            client_config,
            on_reply=self._saw_reply,
            session=session,
            frame_sequence=self._next_frame_sequence if session is not None else None,
        )
        self._pinpad_loader: PinPadLoader = pinpad_loader or load_pinpads
        self._state_block = state_block
        self._state: BranchState | None = None
        self.terminals: list[Terminal] = []
        self._results_seen: dict[str, set[str]] = {}
        self._by_result: Tally[str] = Tally()
        self._sent = self._answered = self._timeouts = self._surprises = 0
        self._winding_down = False

    async def start(self) -> None:
        """Open the counters, load the PIN pads, start the client."""
        if self._state is not None:
            return
        state = BranchState.open(self.data_dir, self.branch_id, block=self._state_block)
        resume = {t: state.peek(t, Counter.KSN) for t in self.terminal_ids}
        pads = self._pinpad_loader(self.data_dir, self.branch_id, resume)
        missing = [t for t in self.terminal_ids if t not in pads]
        if missing:
            raise BranchError(
                f"branch {self.branch_id} has no PIN pad for terminal(s) {', '.join(missing)}"
            )
        self.terminals = [
            Terminal(
                self.branch_id,
                terminal_id,
                pad=pads[terminal_id],
                model=WorkloadModel(
                    f"{self.seed}/{self.branch_id}/{terminal_id}",
                    self.workload,
                    self._card_stock(state, terminal_id),
                ),
                client=self.client,
                state=state,
                supervisor=self.supervisor,
            )
            for terminal_id in self.terminal_ids
        ]
        self._state = state
        await self.client.start()

    async def run(self, duration_s: float, *, max_requests: int | None = None) -> BranchReport:
        """Serve customers on every terminal for ``duration_s`` (or ``max_requests`` in all).

        Each terminal finishes the customer it is serving when time is up (or after
        :meth:`wind_down`), so no request is left without an answer or a timeout.

        Raises:
            BranchNotRegistered: the host does not know this branch.
            ClientClosed: the branch was stopped meanwhile.
        """
        if self._state is None:
            raise BranchError(f"branch {self.branch_id} is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration_s
        limit = self._sent + max_requests if max_requests is not None else None
        outcomes: list[Outcome] = []
        self._winding_down = False

        async def serve(terminal: Terminal) -> None:
            while (
                not self._winding_down
                and loop.time() < deadline
                and (limit is None or self._sent < limit)
            ):
                self._sent += 1
                outcome = await terminal.serve()
                self._record(outcome)
                outcomes.append(outcome)

        tasks = [
            asyncio.create_task(serve(t), name=f"terminal:{self.branch_id}-{t.terminal_id}")
            for t in self.terminals
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        report = BranchReport(self.branch_id, tuple(outcomes), self.statistics(), self.results_seen)
        _log.info(
            "branch run finished",
            branch=self.branch_id,
            requests=len(outcomes),
            timeouts=sum(o.result == TIMEOUT for o in outcomes),
            surprises=report.statistics.surprises,
            mean_batch=round(report.statistics.client.mean_batch, 1),
        )
        return report

    def wind_down(self) -> None:
        """End the current :meth:`run` early: each terminal finishes its customer, then stops."""
        self._winding_down = True

    async def stop(self) -> None:
        """Stop the client and write the counters' exact positions."""
        await self.client.stop()
        state, self._state = self._state, None
        if state is not None:
            for terminal in self.terminals:
                with contextlib.suppress(ValueError):
                    terminal.record_position()
            state.close()

    def desk(self, terminal_id: str, *, teller: str | None = None, role: Role = "teller") -> Desk:
        """A terminal of this started branch, to key requests by hand (teller console,
        scenarios); it shares the terminal's PIN pad and the branch's counters and client."""
        if self._state is None:
            raise BranchError(f"branch {self.branch_id} is not started")
        for terminal in self.terminals:
            if terminal.terminal_id == terminal_id:
                return Desk(
                    self.branch_id,
                    terminal_id,
                    pad=terminal.pad,
                    client=self.client,
                    state=self._state,
                    teller=teller,
                    role=role,
                )
        raise BranchError(f"branch {self.branch_id} has no terminal {terminal_id}")

    @property
    def results_seen(self) -> Mapping[str, frozenset[str]]:
        """Every distinct result seen per request id so far."""
        return MappingProxyType({rid: frozenset(r) for rid, r in self._results_seen.items()})

    def statistics(self) -> BranchStatistics:
        return BranchStatistics(
            sent=self._sent,
            answered=self._answered,
            timeouts=self._timeouts,
            by_result=dict(self._by_result),
            in_flight=self._sent - self._answered - self._timeouts,
            surprises=self._surprises,
            client=self.client.statistics(),
        )

    def _record(self, outcome: Outcome) -> None:
        if outcome.result == TIMEOUT:
            self._timeouts += 1
            return
        self._answered += 1
        self._by_result[outcome.result] += 1
        if outcome.result != outcome.expected:
            self._surprises += 1

    def _saw_reply(self, reply: Reply) -> None:
        self._results_seen.setdefault(reply.request_id, set()).add(str(reply.result))

    def _next_frame_sequence(self) -> int:
        if self._state is None:
            raise BranchError(f"branch {self.branch_id} is not started")
        return self._state.take(BRANCH_WIDE, Counter.FRAME)

    def _card_stock(self, state: BranchState, terminal_id: str) -> Callable[[], str]:
        def issue() -> str:
            serial = state.take(terminal_id, Counter.CARD_SERIAL)
            return card_number(self.branch_id, terminal_id, serial)

        return issue
