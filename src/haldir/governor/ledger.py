"""Watch: the ledger service. Builds entries (with anomaly detection) for every service that records,
appends them, reads them back, proves them, signs checkpoints, and verifies the log and sums spend
(with `verification`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from haldir.core import ids, merkle
from haldir.core.checkpoints import Checkpoint, Signer, Verifier, sign_checkpoint
from haldir.core.clock import Clock
from haldir.core.keys import Principal
from haldir.core.ledger import EntryDraft, EntryFilter, StoredCheckpoint, StoredEntry, draft_entry
from haldir.core.pagination import MAX_PAGE, Position, decode_cursor, encode_cursor
from haldir.core.sessions import Session
from haldir.errors import ConfigurationError, InvalidRequest, LedgerTampered, NotFound
from haldir.governor import verification
from haldir.governor.verification import Spend, Verification
from haldir.store.ports import LedgerStore

AUDIT = "aud"
_ASCENDING = "ledger-asc"  # the cursor id of oldest-first pages, so a cursor is never reused across orders

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class EntryPage:
    entries: list[StoredEntry]
    next_cursor: str | None


@dataclass(frozen=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    proof: list[bytes]


@dataclass(frozen=True)
class ConsistencyProof:
    first: int
    second: int
    first_root: bytes
    second_root: bytes
    proof: list[bytes]


@dataclass(frozen=True)
class LogKey:
    origin: str
    vkey: str
    public_key: bytes


class Ledger:
    """The tenant's append-only log. Other services record through `append`, or, when an entry must
    commit in their own transaction, build it with `entry` (or `spend_entry`) and queue it there."""

    def __init__(
        self, *, ledger_store: LedgerStore, clock: Clock, log_signer: Signer | None, log_origin: str
    ) -> None:
        self._ledger_store = ledger_store
        self._clock = clock
        self._log_signer = log_signer
        self._log_origin = log_origin

    async def append(
        self, tenant_id: str, *, session_id: str | None, agent_id: str | None, **fields: Any
    ) -> StoredEntry:
        """Record anything in the ledger: the one door every governed action and decision goes through
        (spends, which commit with their entry, build theirs with `spend_entry` and queue it in their
        transaction)."""
        return await self._ledger_store.append(
            self.entry(tenant_id, session_id=session_id, agent_id=agent_id, **fields)
        )

    def entry(
        self,
        tenant_id: str,
        *,
        session_id: str | None,
        agent_id: str | None,
        flag_reason: str | None = None,
        **fields: Any,
    ) -> EntryDraft:
        """A ledger entry of `fields`, to be flagged when the detectors or the tenant's rules say so (the
        store judges it where it appends it), or with `flag_reason` when the caller gives one (a refused
        call is flagged with the policy's reason)."""
        return draft_entry(
            entry_id=ids.new_id(AUDIT),
            tenant_id=tenant_id,
            session_id=session_id,
            agent_id=agent_id,
            timestamp=self._clock.now(),
            flag_reason=flag_reason,
            **fields,
        )

    def spend_entry(self, session: Session, *, charged_micros: int, **fields: Any) -> EntryDraft:
        """The entry of a change to `session`'s spend, which commits in the same transaction as it."""
        return self.entry(
            session.tenant_id,
            session_id=session.session_id,
            agent_id=session.agent_id,
            charged_micros=charged_micros,
            **fields,
        )

    async def get_entry(self, principal: Principal, entry_id: str) -> StoredEntry:
        principal.require("audit:read")
        found = (
            await self._ledger_store.get(principal.tenant_id, entry_id)
            if ids.is_id(AUDIT, entry_id)
            else None
        )
        if found is None:
            raise NotFound(f"no audit entry {entry_id!r} in this tenant")
        return found

    async def list_entries(
        self,
        principal: Principal,
        *,
        where: EntryFilter,
        limit: int = 50,
        cursor: str | None = None,
        order: Order = "desc",
    ) -> EntryPage:
        """A page of entries, newest first; `order="asc"` pages oldest first, in leaf order (for exports)."""
        principal.require("audit:read")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        if order not in ("asc", "desc"):
            raise InvalidRequest(f"order must be 'asc' or 'desc', got {order!r}")
        marker = _ASCENDING if order == "asc" else "ledger"
        position = decode_cursor(cursor)
        if position is not None and (position.id == _ASCENDING) != (order == "asc"):
            raise InvalidRequest("this cursor belongs to a listing in the other order; pass the same order")
        last = None if position is None else position.sort_key
        entries = await self._ledger_store.page(
            principal.tenant_id,
            where=where,
            limit=limit + 1,
            before=last if order == "desc" else None,
            after=(-1 if last is None else last) if order == "asc" else None,
        )
        more = len(entries) > limit
        entries = entries[:limit]
        next_position = Position(entries[-1].leaf_index, marker) if more else None
        return EntryPage(entries, encode_cursor(next_position))

    # proofs

    async def inclusion_proof(
        self, principal: Principal, entry_id: str, *, tree_size: int | None = None
    ) -> InclusionProof:
        entry = await self.get_entry(principal, entry_id)
        size = await self._size_within(principal.tenant_id, tree_size)
        if entry.leaf_index >= size:
            raise InvalidRequest(f"entry {entry_id} is leaf {entry.leaf_index}, not in a tree of size {size}")
        ranges = merkle.inclusion_ranges(entry.leaf_index, size)
        nodes = await self._ledger_store.nodes(principal.tenant_id, merkle.nodes_for([*ranges, (0, size)]))
        return InclusionProof(
            leaf_index=entry.leaf_index,
            tree_size=size,
            leaf_hash=entry.leaf_hash,
            root_hash=merkle.root(size, nodes),
            proof=merkle.inclusion_proof(entry.leaf_index, size, nodes=nodes),
        )

    async def consistency_proof(self, principal: Principal, *, first: int, second: int) -> ConsistencyProof:
        principal.require("audit:read")
        size = await self._ledger_store.size(principal.tenant_id)
        if not 1 <= first <= second <= size:
            raise InvalidRequest(
                f"need 1 <= first <= second <= {size} (the tree size), got {first} and {second}"
            )
        return await self._consistency(principal.tenant_id, first, second)

    async def _consistency(self, tenant_id: str, first: int, second: int) -> ConsistencyProof:
        ranges = merkle.consistency_ranges(first, second)
        nodes = await self._ledger_store.nodes(
            tenant_id, merkle.nodes_for([*ranges, (0, first), (0, second)])
        )
        return ConsistencyProof(
            first=first,
            second=second,
            first_root=merkle.root(first, nodes),
            second_root=merkle.root(second, nodes),
            proof=merkle.consistency_proof(first, second, nodes=nodes),
        )

    async def _size_within(self, tenant_id: str, tree_size: int | None) -> int:
        size = await self._ledger_store.size(tenant_id)
        if tree_size is None:
            return size
        if not 1 <= tree_size <= size:
            raise InvalidRequest(f"tree_size must be from 1 to {size} (the current size), got {tree_size}")
        return tree_size

    # checkpoints

    def log_key(self, principal: Principal) -> LogKey:
        principal.require("audit:read")
        signer = self._signer()
        return LogKey(self._origin(principal.tenant_id), signer.vkey, signer.verifier.public_key)

    async def checkpoint(self, principal: Principal) -> StoredCheckpoint:
        """The tenant's latest checkpoint, signing one for the current size when the log has grown.

        A new checkpoint is signed only over committed leaves, and only after its tree is proven to
        extend the previous checkpoint's: the log never signs two inconsistent checkpoints.
        """
        principal.require("audit:read")
        tenant_id = principal.tenant_id
        size = await self._ledger_store.size(tenant_id)
        latest = await self._ledger_store.latest_checkpoint(tenant_id)
        if latest is not None and latest.tree_size >= size:
            return latest
        if latest is not None and latest.tree_size > 0:
            link = await self._consistency(tenant_id, latest.tree_size, size)
            try:
                merkle.verify_consistency(
                    first=latest.tree_size,
                    second=size,
                    first_root=latest.root_hash,
                    second_root=link.second_root,
                    proof=link.proof,
                )
            except merkle.ProofError as exc:
                raise LedgerTampered(
                    f"the stored tree of size {size} does not extend checkpoint {latest.tree_size}: {exc}; "
                    "refusing to sign"
                ) from None
            root = link.second_root
        else:
            root = merkle.root(
                size, await self._ledger_store.nodes(tenant_id, set(merkle.range_nodes(0, size)))
            )
        note = sign_checkpoint(Checkpoint(self._origin(tenant_id), size, root), self._signer())
        signed = StoredCheckpoint(tree_size=size, root_hash=root, note=note, signed_at=self._clock.now())
        await self._ledger_store.save_checkpoint(tenant_id, signed)
        return signed

    # the whole log

    async def verify_log(self, principal: Principal) -> Verification:
        """Re-verify the tenant's whole log from the store; the first entry that fails, if any."""
        principal.require("audit:read")
        return await verification.verify_log(
            self._ledger_store,
            principal.tenant_id,
            verifier=self._verifier,
            origin=self._origin(principal.tenant_id),
        )

    async def spend(
        self,
        principal: Principal,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Spend:
        principal.require("audit:read")
        return await verification.spend(
            self._ledger_store,
            principal.tenant_id,
            session_id=session_id,
            agent_id=agent_id,
            since=since,
            until=until,
        )

    def signing_key(self) -> str | None:
        """The log's public key (note verifier key), None when this process signs no checkpoints."""
        return None if self._log_signer is None else self._log_signer.vkey

    def _origin(self, tenant_id: str) -> str:
        return f"{self._log_origin}/{tenant_id}"

    def _signer(self) -> Signer:
        if self._log_signer is None:
            raise ConfigurationError("no log signing key is configured: checkpoints are signed by the server")
        return self._log_signer

    def _verifier(self) -> Verifier:
        return self._signer().verifier
