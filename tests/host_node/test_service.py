"""The host on the embedded bus, with the real crypto node and real PIN pads."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from branch_node.pinpad import load_pinpads
from common.bus import Message
from common.embedded_bus import EmbeddedBroker, EmbeddedBus
from common.errors import BusError
from common.frames import MAX_FRAME_BYTES, FrameKind, build_frame, encode_frame
from common.identity import load_public
from common.pin_commands import PinCommand
from common.replies import Reply
from common.requests import Request, encode_request
from common.results import ResultCode
from common.topology import HOST_REQUESTS, REASON_HEADER, REPLIES_EXCHANGE
from crypto_node import CryptoService, init_keys
from host_node import (
    HostConfig,
    HostService,
    check_store,
    journal_index,
    ledger_path,
    rules,
)
from host_node.audit import audit_store
from host_node.batch import Settlement
from host_node.checkpoint import SIGNER, Checkpoint
from host_node.intake import Unpacked, unpack
from host_node.ledger import Decision
from host_node.tiers import TierChange
from tests.host_node.conftest import connected
from tests.host_node.fakes import BranchDesk, Teller, account_no

BRANCHES = ("0001", "0002")
A, B, C = account_no(1), account_no(2), account_no(3)
#: PINs whose digits appear in no card number of these tests.
PIN, OTHER_PIN, NEW_PIN = "975319", "864208", "531975"
CONFIG = HostConfig(crypto_timeout_s=2.0)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("keys")
    init_keys(home, BRANCHES, 2)
    return home


async def start_host(bus: EmbeddedBus, data_dir: Path, config: HostConfig = CONFIG) -> HostService:
    host = HostService(bus, data_dir, branch_ids=BRANCHES, config=config)
    await host.start()
    return host


@pytest.fixture
async def host(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[HostService]:
    bus = await connected(broker)
    host = await start_host(bus, tmp_path)
    yield host
    await host.stop()
    await bus.close()


@pytest.fixture
async def desk(broker: EmbeddedBroker, host: HostService) -> BranchDesk:
    desk = BranchDesk(await connected(broker))
    await desk.start()
    await desk.watch_dead_letters()
    return desk


@pytest.fixture
def teller(keys_dir: Path) -> Teller:
    return Teller(pad=load_pinpads(keys_dir, "0001")["01"])


def codes(replies: Sequence[Reply]) -> list[str]:
    return [reply.result.value for reply in replies]


async def open_accounts(desk: BranchDesk, teller: Teller) -> None:
    replies = await desk.ask(
        [
            teller.open_account(A, deposit=10_000, pin=teller.pin(PIN, A), id_number="X1"),
            teller.open_account(B, pin=teller.pin(OTHER_PIN, B), id_number="X2"),
            teller.open_account(C, deposit=500, id_number="X3"),
        ]
    )
    assert codes(replies) == ["00", "00", "00"]


async def test_a_day_at_the_counter(
    crypto: CryptoService, host: HostService, desk: BranchDesk, teller: Teller, tmp_path: Path
) -> None:
    await open_accounts(desk, teller)
    replies = await desk.ask(
        [
            teller.deposit(A, 2_000),
            teller.withdraw(A, 3_000, teller.pin(PIN, A)),
            teller.transfer(A, B, 4_000, teller.pin(PIN, A)),
            teller.balance(A, teller.pin(PIN, A)),
            teller.withdraw(B, 5_000, teller.pin(OTHER_PIN, B)),
            teller.close(A, teller.pin(PIN, A)),
            teller.deposit(A, 100),
            teller.withdraw(C, 100, teller.pin(PIN, C)),
        ]
    )
    assert codes(replies) == ["00", "00", "00", "00", "51", "00", "62", "57"]
    assert [r.balance for r in replies[:4]] == [12_000, 9_000, 5_000, 5_000]
    assert (replies[5].amount, replies[5].balance) == (5_000, 0)
    assert all(r.journal_seq for r in replies)
    checks = check_store(ledger_path(tmp_path))
    assert all(check.ok for check in checks.values()), checks
    index = journal_index(ledger_path(tmp_path))
    cash = sum(s.cash_in.get("0001", 0) - s.cash_out.get("0001", 0) for s in index.values())
    assert cash == 10_000 + 500 + 2_000 - 3_000 - 5_000
    assert checks["customers_match_cash"].detail.endswith(f"positions {cash}")


async def test_wrong_pins_move_nothing_and_the_third_locks(
    crypto: CryptoService, host: HostService, desk: BranchDesk, teller: Teller
) -> None:
    await open_accounts(desk, teller)
    wrong = [teller.withdraw(A, 1_000, teller.pin("246813", A)) for _ in range(2)]
    assert codes(await desk.ask(wrong)) == ["55", "55"]
    right = await desk.ask([teller.balance(A, teller.pin(PIN, A))])
    assert codes(right) == ["00"] and right[0].balance == 10_000
    attempts: list[Request] = [teller.withdraw(A, 1_000, teller.pin("111111", A)) for _ in range(3)]
    attempts.append(teller.balance(A, teller.pin(PIN, A)))
    attempts.append(teller.deposit(A, 1))
    assert codes(await desk.ask(attempts)) == ["55", "55", "75", "75", "00"]
    assert host.statistics().by_result["75"] == 2


async def test_a_pin_change_takes_effect_for_the_next_request_in_the_same_frame(
    crypto: CryptoService, host: HostService, desk: BranchDesk, teller: Teller
) -> None:
    await open_accounts(desk, teller)
    replies = await desk.ask(
        [
            teller.change_pin(A, teller.pin(PIN, A), teller.pin(NEW_PIN, A)),
            teller.withdraw(A, 100, teller.pin(PIN, A)),
            teller.withdraw(A, 100, teller.pin(NEW_PIN, A)),
        ]
    )
    assert codes(replies) == ["00", "55", "00"]
    assert host.statistics().deferred >= 2


async def test_requests_on_one_account_in_one_frame_apply_in_arrival_order(
    crypto: CryptoService, host: HostService, desk: BranchDesk, teller: Teller
) -> None:
    await open_accounts(desk, teller)
    withdrawals = [teller.withdraw(A, 1_500, teller.pin(PIN, A)) for _ in range(8)]
    replies = await desk.ask(withdrawals)
    assert codes(replies) == ["00"] * 6 + ["51"] * 2
    assert [r.balance for r in replies[:6]] == [10_000 - 1_500 * n for n in range(1, 7)]


async def test_a_duplicate_is_applied_once_and_answered_alike(
    host: HostService, desk: BranchDesk, teller: Teller, tmp_path: Path
) -> None:
    await desk.ask([teller.open_account(C, deposit=500)])
    deposit = teller.deposit(C, 700)
    (first,) = await desk.ask([deposit])
    again = await desk.ask([deposit, deposit])
    assert again == [first, first] and first.balance == 1_200
    assert journal_index(ledger_path(tmp_path))[deposit.request_id].entries == 1
    forged = deposit.model_copy(update={"amount": 70_000})
    (refused,) = await desk.ask([forged.model_copy(update={"request_id": deposit.request_id})])
    assert refused.result is ResultCode.DUPLICATE_MISMATCH
    (balance,) = await desk.ask([teller.deposit(C, 1)])
    assert balance.balance == 1_201


async def test_a_request_past_its_deadline_is_declined_68_by_the_running_host(
    crypto: CryptoService, host: HostService, desk: BranchDesk, teller: Teller, tmp_path: Path
) -> None:
    await open_accounts(desk, teller)
    now = dt.datetime.now(dt.UTC)
    expired = teller.deposit(A, 500).model_copy(update={"deadline": now - dt.timedelta(seconds=1)})
    alive = teller.deposit(A, 7).model_copy(update={"deadline": now + dt.timedelta(minutes=5)})
    assert codes(await desk.ask([expired, alive])) == ["68", "00"]
    assert codes(await desk.ask([expired])) == ["68"]  # the retry: the stored decline
    assert (await desk.ask([teller.balance(A, teller.pin(PIN, A))]))[0].balance == 10_007
    journal = journal_index(ledger_path(tmp_path))
    late = journal[expired.request_id]
    assert (late.result, late.entries, late.postings) == ("68", 1, ())


async def test_bad_records_are_answered_or_dead_lettered_and_the_rest_proceeds(
    host: HostService, desk: BranchDesk, teller: Teller, tmp_path: Path
) -> None:
    await desk.ask([teller.open_account(C, deposit=500)])
    good = teller.deposit(C, 250)
    template = orjson.loads(encode_request(teller.deposit(C, 1)))

    def variant(**fields: object) -> bytes:
        document = {**template, **fields}
        return json.dumps({k: v for k, v in document.items() if v is not None}).encode()

    records = {
        "unknown kind": (variant(request_id="0001-01-0000000901", kind="teleport"), "12"),
        "negative": (variant(request_id="0001-01-0000000902", amount=-5), "13"),
        "zero": (variant(request_id="0001-01-0000000903", amount=0), "13"),
        "fractional": (variant(request_id="0001-01-0000000904", amount=12.5), "13"),
        "huge": (variant(request_id="0001-01-0000000905", amount=10**30), "13"),
        "missing field": (variant(request_id="0001-01-0000000906", account=None), "30"),
        "malformed account": (variant(request_id="0001-01-0000000907", account=C[:-1] + "0"), "14"),
        "amount as text": (variant(request_id="0001-01-0000000908", amount="5"), "13"),
    }
    unnamed = [b"not json at all", b"[1, 2, 3]", variant(request_id="garbage")]
    frame: list[Request | bytes] = [*(raw for raw, _ in records.values()), good, *unnamed]
    await desk.send(frame)
    ids = [orjson.loads(raw)["request_id"] for raw, _ in records.values()]
    replies = await desk.answers([*ids, good.request_id])
    assert codes(replies) == [code for _, code in records.values()] + ["00"]
    assert replies[-1].balance == 750
    letters = await desk.dead_letters(3)
    assert sorted(d.body for d in letters) == sorted(unnamed)
    assert all(str(d.headers[REASON_HEADER]).startswith("30 ") for d in letters)
    assert {d.headers["x-branchnet-origin"] for d in letters} == {HOST_REQUESTS}
    index = journal_index(ledger_path(tmp_path))
    assert all(index[rid].postings == () for rid in ids)
    assert all(check.ok for check in check_store(ledger_path(tmp_path)).values())


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("garbage", "bad frame header"),
        ("oversize", "exceeds"),
        ("sender", "does not match routing key"),
        ("reply kind", "expected a request frame"),
    ],
)
async def test_bad_frames_are_dead_lettered_with_a_reason(
    host: HostService, desk: BranchDesk, teller: Teller, case: str, reason: str
) -> None:
    deposit = teller.deposit(C, 10)
    if case == "garbage":
        await desk.send_body(b"\xff\xfe not a frame")
    elif case == "oversize":
        await desk.send_body(b"{" + b" " * MAX_FRAME_BYTES + b"}")
    elif case == "sender":
        await desk.send([deposit], sender="0002")
    else:
        reply = build_frame(FrameKind.REPLY, "0001", 1, [encode_request(deposit)])
        await desk.send_body(encode_frame(reply))
    (letter,) = await desk.dead_letters(1)
    assert reason in str(letter.headers[REASON_HEADER])
    (opened,) = await desk.ask([teller.open_account(C)])
    assert opened.result is ResultCode.APPROVED and deposit.request_id not in desk.replies
    stats = host.statistics()
    assert (stats.dead_frames, stats.frames) == (1, 1)


async def test_no_crypto_node_means_91_and_nothing_moves(
    broker: EmbeddedBroker, tmp_path: Path, teller: Teller
) -> None:
    bus = await connected(broker)
    host = await start_host(bus, tmp_path, HostConfig(crypto_timeout_s=0.2))
    desk = BranchDesk(await connected(broker))
    await desk.start()
    try:
        opened = await desk.ask([teller.open_account(A, deposit=900, pin=teller.pin(PIN, A))])
        assert codes(opened) == ["91"]
        await desk.ask([teller.open_account(C, deposit=900)])
        replies = await desk.ask(
            [teller.withdraw(C, 100, teller.pin(PIN, C)), teller.deposit(C, 100)]
        )
        assert codes(replies) == ["57", "00"] and replies[1].balance == 1_000
    finally:
        await host.stop()
    checks = check_store(ledger_path(tmp_path))
    assert checks["customers_match_cash"].detail.endswith("positions 1000")


async def test_a_restarted_host_loses_nothing_acknowledged(
    broker: EmbeddedBroker, crypto: CryptoService, teller: Teller, tmp_path: Path
) -> None:
    desk = BranchDesk(await connected(broker))
    small_batches = HostConfig(max_batch_records=20, prefetch=4, queue_bound=4)
    first = await start_host(await connected(broker), tmp_path, small_batches)
    await desk.start()
    await open_accounts(desk, teller)
    deposits = [teller.deposit(C, 100 + n) for n in range(200)]
    for start in range(0, 200, 20):
        await desk.send(deposits[start : start + 20])
    await desk.answers([deposits[0].request_id])
    await first.stop()
    answered_first = sum(d.request_id in desk.replies for d in deposits)
    assert answered_first < 200, "the first host should stop mid-stream"
    second = await start_host(await connected(broker), tmp_path)
    try:
        replies = await desk.answers([d.request_id for d in deposits])
        assert codes(replies) == ["00"] * 200
        withdrawal = teller.withdraw(A, 1_000, teller.pin(PIN, A))
        assert codes(await desk.ask([withdrawal])) == ["00"]
        assert await desk.ask([deposits[0]]) == replies[:1]
    finally:
        await second.stop()
    index = journal_index(ledger_path(tmp_path))
    assert all(index[d.request_id].entries == 1 for d in deposits)
    checks = check_store(ledger_path(tmp_path))
    assert all(check.ok for check in checks.values()), checks
    expected = 10_000 + 500 + sum(100 + n for n in range(200)) - 1_000
    assert checks["customers_match_cash"].detail.endswith(f"positions {expected}")


class FlakyBus(EmbeddedBus):
    """Fails the next ``failures`` publishes of reply frames."""

    failures = 0

    async def publish(self, messages: Sequence[Message]) -> None:
        if self.failures and any(m.exchange == REPLIES_EXCHANGE for m in messages):
            self.failures -= 1
            raise BusError("broker connection lost")
        await super().publish(messages)


async def test_frames_replayed_after_a_commit_are_absorbed(
    broker: EmbeddedBroker, teller: Teller, tmp_path: Path
) -> None:
    bus = FlakyBus(broker)
    await bus.connect()
    host = await start_host(bus, tmp_path)
    desk = BranchDesk(await connected(broker))
    await desk.start()
    try:
        await desk.ask([teller.open_account(C, deposit=500)])
        bus.failures = 1
        deposit = teller.deposit(C, 300)
        (reply,) = await desk.ask([deposit])
        assert reply.balance == 800 and host.statistics().batches >= 3
    finally:
        await host.stop()
    assert len(desk.replies[deposit.request_id]) == 1
    assert journal_index(ledger_path(tmp_path))[deposit.request_id].entries == 1


async def test_a_request_redelivered_after_a_failed_commit_gets_its_original_verdict(
    broker: EmbeddedBroker, crypto: CryptoService, teller: Teller, tmp_path: Path
) -> None:
    """The crypto round trip happened, the commit did not: the retry re-sends the same KSNs."""
    host = await start_host(await connected(broker), tmp_path)
    desk = BranchDesk(await connected(broker))
    await desk.start()
    try:
        await open_accounts(desk, teller)
        commit = host.store.commit
        failures = [OSError("disk gone")]

        async def failing_commit(settlement: Settlement) -> list[TierChange]:
            if failures:
                raise failures.pop()
            return await commit(settlement)

        host.store.commit = failing_commit  # type: ignore[method-assign]
        right = teller.withdraw(A, 1_000, teller.pin(PIN, A))
        wrong = teller.withdraw(B, 1, teller.pin(PIN, B))
        change = teller.change_pin(A, teller.pin(PIN, A), teller.pin(NEW_PIN, A))
        await desk.send([right, wrong, change])
        replies = await desk.answers([right.request_id, wrong.request_id, change.request_id])
        assert not failures, "the first commit should have failed"
        assert codes(replies) == ["00", "55", "00"]
        assert replies[0].balance == 9_000
        # the new PIN works; a genuine replay of the old block under a new request does not
        assert codes(await desk.ask([teller.withdraw(A, 1, teller.pin(NEW_PIN, A))])) == ["00"]
        replay = teller.withdraw(A, 1, right.pin)
        assert codes(await desk.ask([replay])) == ["96"]
    finally:
        await host.stop()


async def test_replies_go_to_each_branch_in_one_frame_per_batch(
    broker: EmbeddedBroker, host: HostService, desk: BranchDesk, teller: Teller
) -> None:
    other = BranchDesk(await connected(broker), "0002")
    await other.start()
    away = Teller(branch_id="0002")
    await desk.ask([teller.open_account(C, deposit=500)])
    desk.reply_frames.clear()
    home_deposits = [teller.deposit(C, 1) for _ in range(30)]
    away_deposits = [away.deposit(C, 2) for _ in range(30)]
    await asyncio.gather(desk.send(home_deposits), other.send(away_deposits))
    await desk.answers([d.request_id for d in home_deposits])
    await other.answers([d.request_id for d in away_deposits])
    assert set(desk.replies).isdisjoint(other.replies)
    assert len(desk.reply_frames) <= 2
    assert sum(f.header.count for f in desk.reply_frames) == 30


async def test_nothing_secret_reaches_the_store_or_the_logs(
    crypto: CryptoService, broker: EmbeddedBroker, tmp_path: Path, teller: Teller
) -> None:
    with structlog.testing.capture_logs() as logs:
        host = await start_host(await connected(broker), tmp_path)
        desk = BranchDesk(await connected(broker))
        await desk.start()
        pins = [
            teller.pin(PIN, A),
            teller.pin(PIN, A),
            teller.pin("246813", A),
            teller.pin(PIN, A),
            teller.pin(NEW_PIN, A),
        ]
        requests: list[Request] = [
            teller.open_account(A, deposit=10_000, pin=pins[0], id_number="110101199003075517"),
            teller.withdraw(A, 100, pins[1]),
            teller.withdraw(A, 100, pins[2]),
            teller.change_pin(A, pins[3], pins[4]),
        ]
        for request in requests:
            await desk.ask([request])
        await host.stop()
    assert codes([desk.replies[r.request_id][0] for r in requests]) == ["00", "00", "55", "00"]
    stored = b"".join(p.read_bytes() for p in ledger_path(tmp_path).parent.iterdir())
    logged = repr(logs).encode()
    secrets = [PIN, NEW_PIN, "246813"] + [p.pin_block for p in pins] + [p.ksn for p in pins]
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret.encode() not in logged
    assert b"110101199003075517" not in logged and A.encode() not in logged
    assert b"110101199003075517" in stored  # the id number is kept, on purpose
    handled = [e for e in logs if e["event"] == "request frame handled"]
    assert len(handled) == len(requests)


async def test_statistics_count_the_work(
    host: HostService, desk: BranchDesk, teller: Teller
) -> None:
    await desk.ask([teller.open_account(C, deposit=500), teller.deposit(C, 1)])
    await desk.send([b"not json"])
    await desk.dead_letters(1)
    stats = host.statistics()
    assert (stats.frames, stats.records, stats.dead_records) == (2, 3, 1)
    assert stats.by_result == {"00": 2} and stats.journal_seq == 2
    assert stats.inbox == 0 and stats.inbox_bound == CONFIG.queue_bound


async def test_stop_is_quick_when_idle_and_safe_twice(host: HostService) -> None:
    async with asyncio.timeout(1):
        await host.stop()
        await host.stop()


async def test_a_stop_while_a_checkpoint_is_being_stored_signs_every_entry_once(
    crypto: CryptoService,
    broker: EmbeddedBroker,
    teller: Teller,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = await connected(broker)
    host = await start_host(bus, tmp_path, HostConfig(crypto_timeout_s=2.0, checkpoint_every=1))
    desk = BranchDesk(await connected(broker))
    await desk.start()
    await open_accounts(desk, teller)
    # the next periodic checkpoint is held inside its store write while the host stops
    storing, release = asyncio.Event(), asyncio.Event()
    add_checkpoint = host.store.add_checkpoint

    async def slow_add(checkpoint: Checkpoint) -> None:
        async def write() -> None:
            storing.set()
            await release.wait()
            await add_checkpoint(checkpoint)

        # as the store's writer thread does, the write goes on when its waiter is cancelled
        await asyncio.shield(write())

    monkeypatch.setattr(host.store, "add_checkpoint", slow_add)
    assert codes(await desk.ask([teller.deposit(A, 1)])) == ["00"]
    await asyncio.wait_for(storing.wait(), 10)
    stopping = asyncio.create_task(host.stop())
    await asyncio.sleep(0.1)
    release.set()
    await stopping  # raised "UNIQUE constraint failed: checkpoints.seq" when it re-signed them
    await bus.close()
    audit = audit_store(ledger_path(tmp_path), load_public(tmp_path, SIGNER))
    assert audit.ok and audit.unsigned_tail == 0, audit.findings


#: The text of the simulated defects: it must reach no reason, reply or dead letter.
DEFECT_TEXT = f"PIN {PIN} leaked by a bug"


async def test_a_frame_whose_intake_fails_on_a_defect_is_dead_lettered_alone(
    host: HostService,
    desk: BranchDesk,
    teller: Teller,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await desk.ask([teller.open_account(C, deposit=500)])
    poison = teller.deposit(C, 7)
    calls: list[str] = []

    def buggy_unpack(*args: Any, **kwargs: Any) -> Unpacked:
        unpacked = unpack(*args, **kwargs)
        if any(item.request_id == poison.request_id for item in unpacked.items):
            calls.append(poison.request_id)
            raise RuntimeError(DEFECT_TEXT)
        return unpacked

    monkeypatch.setattr("host_node.service.unpack", buggy_unpack)
    before, after = [teller.deposit(C, 100), teller.deposit(C, 20)], [teller.deposit(C, 3)]
    with structlog.testing.capture_logs() as logs:
        await desk.send(before)
        await desk.send([teller.deposit(C, 1_000), poison])  # a good record shares the frame
        await desk.send(after)
        good = [r.request_id for r in before + after]
        replies = await desk.answers(good)
    assert codes(replies) == ["00"] * 3 and replies[-1].balance == 623
    (letter,) = await desk.dead_letters(1)
    assert letter.headers[REASON_HEADER] == "unexpected: RuntimeError"
    assert PIN not in str(letter.headers) and poison.request_id.encode() in letter.body
    (probe,) = await desk.ask([teller.deposit(C, 1)])  # the host still runs
    assert probe.balance == 624
    assert calls == [poison.request_id]  # dead-lettered at once, never redelivered
    assert all(len(desk.replies[rid]) == 1 for rid in good)  # answered exactly once
    assert poison.request_id not in desk.replies and len(desk.dead) == 1
    assert poison.request_id not in journal_index(ledger_path(tmp_path))
    assert all(check.ok for check in check_store(ledger_path(tmp_path)).values())
    assert (host.statistics().dead_frames, host.statistics().frames) == (1, 4)
    assert [e["error_type"] for e in logs if "defect" in e["event"]] == ["RuntimeError"]
    assert PIN not in repr(logs) + caplog.text


@pytest.mark.parametrize("stage", ["rule", "pin command"])
async def test_a_record_whose_handling_fails_on_a_defect_is_declined_96_alone(
    crypto: CryptoService,
    host: HostService,
    desk: BranchDesk,
    teller: Teller,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stage: str,
) -> None:
    await open_accounts(desk, teller)
    poison = teller.withdraw(A, 1_000, teller.pin(PIN, A))
    if stage == "rule":  # the rule handler raises: while the batch is settled
        withdraw = rules._RULES["withdraw"]

        def buggy_rule(request: Request, *args: Any) -> Decision:
            if request.request_id == poison.request_id:
                raise RuntimeError(DEFECT_TEXT)
            return withdraw(request, *args)

        monkeypatch.setitem(rules._RULES, "withdraw", buggy_rule)
    else:  # making its PIN command raises: while the batch is planned

        def buggy_command(request: Request, *args: Any) -> PinCommand | None:
            if request.request_id == poison.request_id:
                raise RuntimeError(DEFECT_TEXT)
            return rules.pin_command(request, *args)

        monkeypatch.setattr("host_node.batch.pin_command", buggy_command)
    frame: list[Request] = [
        teller.withdraw(A, 2_000, teller.pin(PIN, A)),
        poison,
        teller.transfer(A, B, 500, teller.pin(PIN, A)),
        teller.deposit(C, 50),
    ]
    with structlog.testing.capture_logs() as logs:
        replies = await desk.ask(frame)
    assert codes(replies) == ["00", "96", "00", "00"]
    assert [e["error_type"] for e in logs if "defect" in e["event"]] == ["RuntimeError"]
    assert PIN not in repr(logs) + caplog.text
    assert replies[1].reason == "unexpected: RuntimeError" and PIN not in str(replies[1])
    assert [replies[0].balance, replies[2].balance, replies[3].balance] == [8_000, 7_500, 550]
    monkeypatch.undo()  # the defect fixed: a retry still gets the answer it got (idempotency)
    again, probe = await desk.ask([poison, teller.balance(A, teller.pin(PIN, A))])
    assert again == replies[1] and probe.balance == 7_500
    assert all(len(desk.replies[r.request_id]) == 1 for r in frame if r is not poison)
    assert not desk.dead
    entry = journal_index(ledger_path(tmp_path))[poison.request_id]
    assert (entry.result, entry.entries, entry.postings) == ("96", 1, ())
    assert all(check.ok for check in check_store(ledger_path(tmp_path)).values())
    assert host.statistics().frames == 3  # each frame taken once: none handed back
