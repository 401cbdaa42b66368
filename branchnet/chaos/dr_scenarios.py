"""Disaster-recovery and journal fault injectors: standby-kill, failover, journal-corruption.

Each injector runs beside the workload of :mod:`branchnet.chaos.scenarios` and adds its own
figures (``run.observed``) and checks (``run.checks``: every one must hold for the run to pass).

- ``standby-kill``: kill -9 the standby of a sync primary repeatedly. With ``stop`` the
  primary never approves an entry the standby does not hold; with ``async`` it keeps
  answering and raises the degraded alert. Each return is timed until the standby holds
  what the primary held when it came back; at the end both journals are equal and verify.
- ``failover``: kill -9 the primary, promote the standby in place, carry on. The checker
  runs against the new primary's journal; RPO and RTO as :func:`branchnet.failover.
  failover_figures` measures them; the old primary, restarted, must refuse to process.
- ``journal-corruption``: after the workload, damage the stopped host's store three ways
  (:mod:`branchnet.chaos.damage`); each time the host must refuse to start, naming the first
  bad entry. The intact store is put back between kinds and must start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from branch_node import BranchReport, Outcome
from branchnet.chaos import damage
from branchnet.failover import (
    failover_figures,
    journal_head,
    journal_seqs,
    promote,
    received_at,
)
from branchnet.reconcile import Reconciliation, with_standby
from common.identity import load_public
from host_node.checkpoint import SIGNER
from host_node.store import ledger_path

if TYPE_CHECKING:
    from branchnet.chaos.scenarios import _Run

STANDBY_KILL = "kill -9 the sync standby repeatedly: the standby-lost policy holds, it catches up"
FAILOVER = "kill -9 the primary, promote the standby, carry on: RPO 0, RTO measured"
CORRUPTION = "tear the WAL, flip a journal bit, cut the store: the host refuses to start"

#: How long a returning standby may take to catch up, and a damaged host to refuse.
CATCH_UP_TIMEOUT_S = 120.0
START_TIMEOUT_S = 120.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class _Outage:
    """The standby was down from ``killed`` to ``restarted`` holding entries up to ``held``."""

    killed: dt.datetime
    restarted: dt.datetime
    held: int


# --- standby-kill ------------------------------------------------------------------------


async def kill_standby(run: _Run) -> None:
    nodes = run.nodes
    outages: list[_Outage] = []
    catch_up: list[float] = []
    behind: list[int] = []  # entries each returning standby lacked
    # down for longer than the primary waits for it, so the policy is what decides
    down = (nodes.standby_timeout_s + 1.0, nodes.standby_timeout_s + 2.5)
    while await run.pause(1.5, 3.0):
        nodes.kill("standby")
        run.faults["standby_kill"] += 1
        killed, held = _now(), journal_head(nodes.standby_dir)
        await asyncio.sleep(run.rng.uniform(*down))
        since, answered = time.monotonic(), run.answered()
        primary_head = journal_head(nodes.data_dir)
        behind.append(primary_head - journal_head(nodes.standby_dir))
        nodes.start("standby")
        outages.append(_Outage(killed, _now(), held))
        await asyncio.gather(
            run.measure_recovery(since, answered),
            _catch_up(nodes.standby_dir, primary_head, since, catch_up),
        )
    reports: list[BranchReport] = await run.finished
    heads = await _heads_meet(nodes.data_dir, nodes.standby_dir)
    standby = with_standby(Reconciliation({}), ledger_path(nodes.data_dir), nodes.standby_dir)
    holds = standby.checks["standby_holds_journal"]
    outcomes = [o for report in reports for o in report.outcomes]
    beyond, during = _answers_while_down(outcomes, outages, journal_seqs(nodes.data_dir))
    alerts = _degraded_alerts(nodes.logs / "host.log")
    policy = nodes.standby_lost
    run.observed["standby"] = {
        "policy": f"standby-lost={policy}",
        "outages": len(outages),
        "answers_while_down": during,
        "approvals_beyond_standby": beyond,
        "degraded_alerts": alerts["degraded"],
        "resynced_alerts": alerts["resynced"],
        "max_reported_lag": alerts["max_lag"],
        "catch_up_s": [round(s, 3) for s in catch_up],
        "catch_up_entries": behind,
        "primary_head": heads[0],
        "standby_head": heads[1],
        "standby_holds_journal": holds.detail,
    }
    run.checks["standby_caught_up"] = len(catch_up) == len(outages)
    run.checks["standby_head_equals_primary"] = heads[0] == heads[1] > 0
    run.checks["standby_chain_verifies"] = holds.ok
    if policy == "stop":
        run.checks["no_approval_without_standby"] = beyond == 0
    else:
        run.checks["primary_kept_answering"] = bool(outages) and beyond > 0
        run.checks["primary_reported_lag"] = bool(outages) and alerts["degraded"] > 0


async def _catch_up(standby_dir: Path, target: int, since: float, times: list[float]) -> None:
    """Record seconds from ``since`` until the standby holds entry ``target``."""
    deadline = since + CATCH_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        if journal_head(standby_dir) >= target:
            times.append(time.monotonic() - since)
            return
        await asyncio.sleep(0.05)


async def _heads_meet(primary: Path, standby: Path, settle_s: float = 1.0) -> tuple[int, int]:
    """Both journal heads once they are equal for ``settle_s`` (or at the deadline)."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    equal_since: float | None = None
    while True:
        heads = journal_head(primary), journal_head(standby)
        now = time.monotonic()
        if heads[0] != heads[1]:
            equal_since = None
        elif equal_since is None:
            equal_since = now
        if (equal_since is not None and now - equal_since >= settle_s) or now > deadline:
            return heads
        await asyncio.sleep(0.1)


def _answers_while_down(
    outcomes: list[Outcome], outages: list[_Outage], seqs: dict[str, int]
) -> tuple[int, int]:
    """Approvals received while the standby was down for entries it did not hold, and all
    answers received while it was down."""
    beyond = during = 0
    for outcome in outcomes:
        if outcome.result == "timeout":
            continue
        at = received_at(outcome)
        outage = next((o for o in outages if o.killed < at < o.restarted), None)
        if outage is None:
            continue
        during += 1
        beyond += outcome.result == "00" and seqs.get(outcome.request_id, 0) > outage.held
    return beyond, during


def _degraded_alerts(log: Path) -> dict[str, int]:
    """The host's degraded-to-async and back-in-sync alerts, and the largest lag reported."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    degraded = [line for line in text.splitlines() if "degraded to async" in line]
    lags = [int(m) for line in degraded for m in re.findall(r"lag\W+(\d+)", line)]
    return {
        "degraded": len(degraded),
        "resynced": text.count("sync replication again"),
        "max_lag": max(lags, default=0),
    }


# --- failover ----------------------------------------------------------------------------


async def fail_over(run: _Run) -> None:
    nodes = run.nodes
    if not await run.pause(2.0, 4.0):
        run.checks["primary_killed"] = False
        return
    old_command = nodes.command("host")
    since, answered = time.monotonic(), run.answered()
    killed_at = _now()
    nodes.kill("host")
    run.faults["primary_kill"] += 1
    url = run.config.amqp_url
    assert url is not None
    promotion = await asyncio.to_thread(promote, url, nodes.standby_dir)
    promoted_at = _now()
    run.checks["standby_promoted"] = promotion.returncode == 0
    if promotion.returncode != 0:
        run.observed["promotion_error"] = " ".join(promotion.stderr.split())[-500:]
        return
    nodes.promoted()
    await run.measure_recovery(since, answered)
    reports: list[BranchReport] = await run.finished
    # the old primary comes back: it must see the higher epoch and refuse
    started, code, output = await _start(old_command, nodes.env)
    run.checks["old_primary_refused"] = not started and "refuses to process" in output
    if started or code == 0:
        run.observed["old_primary"] = output[-400:]
    outcomes = [o for report in reports for o in report.outcomes]
    figures = failover_figures(outcomes, nodes.data_dir, nodes.standby_dir, killed_at, promoted_at)
    run.observed["failover"] = figures
    run.checks["rpo_zero"] = figures["rpo_approved_answers_lost"] == 0
    run.checks["new_primary_approved"] = figures["rto_s"] is not None


# --- journal-corruption ------------------------------------------------------------------

_Damager = Callable[[Path, random.Random], damage.Damage]


async def corrupt_journal(run: _Run) -> None:
    nodes = run.nodes
    await asyncio.wait({run.finished})
    store = ledger_path(nodes.host_dir)
    key = load_public(nodes.host_dir, SIGNER)
    found: dict[str, dict[str, Any]] = {}
    nodes.kill("host")  # a crash leaves the newest batches in the write-ahead log
    found["torn-wal-tail"] = await _refused(run, store, key, damage.tear_wal)
    # the intact store must start (no false alarm); a clean stop merges the log
    started, _, output = await _start(nodes.command("host"), nodes.env)
    run.checks["intact_store_starts"] = started
    if not started:
        run.observed["intact_start"] = output[-400:]
    damage.settle(store)  # as a clean stop leaves it, whether or not SIGTERM came too early
    found["bit-flip"] = await _refused(run, store, key, damage.flip_bit)
    found["torn-store-tail"] = await _refused(run, store, key, damage.truncate_store)
    nodes.start("host")
    run.observed["corruption"] = found
    run.observed["corruption_scope"] = (
        "money_conserved and chain_verified: the intact store, put back after each kind; "
        "damaged_store: what SQLite and the chain audit say of the store as damaged"
    )
    for kind, result in found.items():
        run.checks[f"{kind}_refused"] = bool(result["detected"])
    run.faults["stores_damaged"] = sum(bool(r["applied"]) for r in found.values())


async def _refused(
    run: _Run, store: Path, key: Ed25519PublicKey, damager: _Damager
) -> dict[str, Any]:
    """Damage the stopped host's store, start the host, put the intact store back."""
    intact = store.parent / "intact"
    damage.backup(store, intact)
    try:
        done = damager(store, run.rng)
        if not done.applied:
            return {"applied": False, "detected": False, "detail": done.detail}
        truth = damage.store_verdict(store, key)
        started, code, output = await _start(run.nodes.command("host"), run.nodes.env)
    finally:
        damage.restore(store, intact)
        shutil.rmtree(intact)
    named = re.search(r"first bad entry is (\d+)", output)
    error = re.search(r"error: (.*)", output)
    return {
        "applied": True,
        "detail": done.detail,
        "first_bad_entry": done.first_bad,
        "damaged_store": truth,
        "exit_code": code,
        "detected": not started and code != 0 and "damaged" in output,
        "named_entry": int(named.group(1)) if named else None,
        "error": error.group(1)[:400] if error else output[-400:],
    }


async def _start(command: list[str], env: dict[str, str]) -> tuple[bool, int | None, str]:
    """Run ``branchnet`` ``command`` until it exits or says it started (then SIGTERM it).

    Returns whether it started, its exit status when it did not, and its output unwrapped.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "branchnet.cli",
        *command,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    started = hanging = False
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            async for raw in process.stdout:
                lines.append(raw.decode(errors="replace"))
                if "node started" in lines[-1]:
                    started = True
                    break
    except TimeoutError:
        hanging = True
    if started or hanging:  # else its output ended: it is exiting on its own
        process.terminate()
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            rest, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        rest, _ = await process.communicate()
    lines.append(rest.decode(errors="replace"))
    return started, None if started else process.returncode, " ".join("".join(lines).split())
