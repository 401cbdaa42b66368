"""Looking entries up in the journal: by account, branch, time range, result code or kind."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.ids import mask_pan
from host_node.journal import JournalEntry, decode_entry
from host_node.store import connect_read_only


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Which entries to show; every field left None matches everything.

    ``account`` matches an entry that posts to the account or whose masked subject is that
    account's; ``since``/``until`` bound the processing time (``until`` exclusive).
    """

    account: str | None = None
    branch_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    result: str | None = None
    kind: str | None = None
    request_id: str | None = None

    def matches(self, entry: JournalEntry) -> bool:
        if self.branch_id is not None and entry.branch_id != self.branch_id:
            return False
        if self.result is not None and entry.result.value != self.result:
            return False
        if self.kind is not None and entry.kind != self.kind:
            return False
        if self.request_id is not None and entry.request_id != self.request_id:
            return False
        if self.since is not None and entry.processed_at < self.since:
            return False
        if self.until is not None and entry.processed_at >= self.until:
            return False
        if self.account is not None:
            posted = any(p.account == self.account for p in entry.postings)
            if not posted and entry.subject != mask_pan(self.account):
                return False
        return True


def find_entries(
    path: Path, where: EntryFilter, *, limit: int | None = None
) -> Iterator[JournalEntry]:
    """The entries of the store at ``path`` that ``where`` matches, in sequence order.

    Raises:
        StoreError: there is no readable store at ``path``.
    """
    connection = connect_read_only(path)
    try:
        query, params = "SELECT body, hash FROM journal", []
        clauses = []
        if where.request_id is not None:
            clauses.append("request_id = ?")
            params.append(where.request_id)
        if where.result is not None:
            clauses.append("result = ?")
            params.append(where.result)
        if where.kind is not None:
            clauses.append("kind = ?")
            params.append(where.kind)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        shown = 0
        for body, hash_ in connection.execute(query + " ORDER BY seq", params):
            if limit is not None and shown >= limit:
                return
            entry = decode_entry(body, hash_)
            if where.matches(entry):
                shown += 1
                yield entry
    finally:
        connection.close()
