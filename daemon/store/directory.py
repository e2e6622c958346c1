"""Links, their members and fingerprints, tombstones and read cursors."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon.state import (
    CustomerState,
    Decision,
    Fingerprints,
    Link,
    Member,
    OpenDispute,
    OpenTask,
)
from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import DuplicateMember, NotFound
from daemon.store.journal import finish_entries
from daemon.store.rows import AppliedChunk, DisputeStatus, EventLevel, MemberValues, TaskStatus
from daemon.store.schema import (
    cursors,
    disputes,
    link_members,
    links,
    manual_tasks,
    run_events,
    store_meta,
    tombstones,
)
from daemon.store.schema import fingerprints as fingerprint_table

# store_meta holds, per customer, when its first link was made: links go when contacts
# leave or are erased, the date the processing began stays. Named by a digest of the
# customer id (store_meta names are short); the value is the UTC time in ISO form.
_FIRST_LINK = "first_link/"


def _first_link_name(customer_id: str) -> str:
    return _FIRST_LINK + hashlib.sha256(customer_id.encode("utf-8")).hexdigest()[:48]


class DirectoryMixin(StoreBase):
    def load_state(self, customer_id: str) -> CustomerState:
        """Everything the reconciler needs about the customer, as of one point in time.

        Links with their members and fingerprints, open disputes keyed (link_id, field),
        open manual tasks keyed (link_id, system) (when one record has open tasks of
        several op kinds, the newest is the one shown), and tombstones.
        """
        with self._read(snapshot=True) as conn:
            link_ids = conn.scalars(
                sa.select(links.c.id).where(links.c.customer_id == customer_id).order_by(links.c.id)
            ).all()
            member_rows = conn.execute(
                sa.select(link_members).where(link_members.c.customer_id == customer_id)
            ).all()
            fp_rows = conn.execute(
                sa.select(fingerprint_table)
                .join(
                    link_members,
                    sa.and_(
                        link_members.c.link_id == fingerprint_table.c.link_id,
                        link_members.c.system == fingerprint_table.c.system,
                    ),
                )
                .where(link_members.c.customer_id == customer_id)
            ).all()
            # Open disputes, and decisions not yet carried out (resolved history stays out).
            pending = sa.and_(
                disputes.c.status == DisputeStatus.RESOLVED.value,
                disputes.c.resolution["winner"].as_string().is_not(None),
                disputes.c.resolution["carried_out"].as_string().is_(None),
            )
            case_rows = conn.execute(
                sa.select(disputes)
                .where(
                    disputes.c.customer_id == customer_id,
                    sa.or_(disputes.c.status == DisputeStatus.OPEN.value, pending),
                )
                .order_by(disputes.c.id)
            ).all()
            task_rows = conn.execute(
                sa.select(manual_tasks)
                .where(
                    manual_tasks.c.customer_id == customer_id,
                    manual_tasks.c.status == TaskStatus.OPEN.value,
                )
                .order_by(manual_tasks.c.id)
            ).all()
            tombstone_fps = conn.scalars(
                sa.select(tombstones.c.fp).where(tombstones.c.customer_id == customer_id)
            ).all()

        fps: dict[tuple[str, str], dict[str, str]] = {}
        for row in fp_rows:
            fps.setdefault((row.link_id, row.system), {})[row.field] = row.fp
        members: dict[str, dict[str, Member]] = {link_id: {} for link_id in link_ids}
        for row in member_rows:
            members.setdefault(row.link_id, {})[row.system] = Member(
                system=row.system,
                external_id=row.external_id,
                version=row.version,
                # Packed: a large customer's state would not fit in memory as dicts.
                fingerprints=Fingerprints(fps.get((row.link_id, row.system), {})),
            )
        return CustomerState(
            customer_id=customer_id,
            links={link_id: Link(id=link_id, members=m) for link_id, m in members.items()},
            disputes={
                (row.link_id, row.field): OpenDispute(
                    id=row.id, link_id=row.link_id, field=row.field, fingerprints=row.fingerprints
                )
                for row in case_rows
                if row.status == DisputeStatus.OPEN.value
            },
            decisions={
                (row.link_id, row.field): Decision(
                    id=row.id,
                    link_id=row.link_id,
                    field=row.field,
                    winner=row.resolution["winner"],
                    fingerprints=row.fingerprints,
                )
                for row in case_rows
                if row.status == DisputeStatus.RESOLVED.value and _pending_decision(row.resolution)
            },
            tasks={
                (row.link_id, row.system): OpenTask(
                    id=row.id,
                    link_id=row.link_id,
                    system=row.system,
                    op_kind=row.op_kind,
                    op_fingerprint=row.op_fingerprint,
                )
                for row in task_rows
            },
            tombstones=frozenset(tombstone_fps),
        )

    def first_linked_at(self, customer_id: str) -> datetime | None:
        """When the customer's first link ever was made (None: it never had one).

        Kept when links go (a contact leaves the card, a subject is erased): recorded
        when links are made or removed; for a store from before that record, the oldest
        link it still has (and recorded from then on)."""
        name = _first_link_name(customer_id)
        with self._read() as conn:
            value = conn.scalar(sa.select(store_meta.c.value).where(store_meta.c.name == name))
            oldest = self._oldest_link(conn, customer_id) if value is None else None
        if value is not None:
            return datetime.fromisoformat(bytes(value).decode("ascii")).astimezone(UTC)
        if oldest is None:
            return None
        with self._write() as conn:
            self._remember_first_link(conn, customer_id)
        return oldest

    def _oldest_link(self, conn: Connection, customer_id: str) -> datetime | None:
        found: datetime | None = conn.scalar(
            sa.select(links.c.created_at)  # the column's type: a UTC datetime on both
            .where(links.c.customer_id == customer_id)
            .order_by(links.c.created_at)
            .limit(1)
        )
        return found

    def _remember_first_link(self, conn: Connection, customer_id: str) -> None:
        """Record the customer's oldest link as its first, unless one is recorded."""
        name = _first_link_name(customer_id)
        if conn.scalar(sa.select(store_meta.c.name).where(store_meta.c.name == name)):
            return
        oldest = self._oldest_link(conn, customer_id)
        if oldest is None:
            return
        conn.execute(
            self._upsert(store_meta)
            .values(name=name, value=oldest.astimezone(UTC).isoformat().encode("ascii"))
            .on_conflict_do_nothing(index_elements=[store_meta.c.name])
        )

    def create_link(self, customer_id: str) -> str:
        """A new, empty link for the customer; returns its id (a UUID)."""
        link_id = str(uuid.uuid4())
        with self._write() as conn:
            conn.execute(
                sa.insert(links).values(id=link_id, customer_id=customer_id, created_at=utcnow())
            )
            self._remember_first_link(conn, customer_id)
        return link_id

    def set_member(
        self,
        customer_id: str,
        link_id: str,
        system: str,
        external_id: str,
        version: str | None,
        fingerprints: Mapping[str, str],
    ) -> None:
        """Make (system, external_id) the link's member for `system`, in one transaction.

        Creates the link when it does not exist yet (the reconciler derives new link ids
        deterministically, so a rerun after a crash reuses them), upserts the member (a
        new external id replaces the old one) and sets the fingerprints of the fields
        given; fingerprints of other fields stay as they were. Raises NotFound when the
        link is another customer's, and DuplicateMember when the record is already a
        member of another link (unlink it there first).
        """
        self.set_members(customer_id, [(link_id, system, external_id, version, fingerprints)])

    def set_members(
        self,
        customer_id: str,
        members: Sequence[tuple[str, str, str, str | None, Mapping[str, str]]],
    ) -> None:
        """`set_member` for many (link_id, system, external_id, version, fingerprints) at
        once, in one transaction, with statements compiled once: a first sync baselines
        thousands of records."""
        if not members:
            return
        try:
            with self._write() as conn:
                self._set_members_on(conn, customer_id, members)
        except sa.exc.IntegrityError:
            self._explain_lost_race(customer_id, members)
            raise

    def record_applied(self, customer_id: str, run_id: str, chunk: AppliedChunk) -> None:
        """Store what a chunk of a sync's operations came to, in one transaction: the
        members set and removed, the journal entries finished, the run's events.

        The chunk's journal entries were begun (journal_attempts) before the system was
        asked, so a crash before this commits leaves them pending and the next run
        retries them under the same keys; after it, all of the chunk is recorded. Raises
        DuplicateMember and NotFound as set_members does.
        """
        now = utcnow()
        try:
            with self._write() as conn:
                if chunk.members:
                    self._set_members_on(conn, customer_id, chunk.members)
                for link_id, system in chunk.removals:
                    self._remove_member_on(conn, customer_id, link_id, system)
                finish_entries(conn, chunk.finished)
                if chunk.events:
                    conn.execute(
                        sa.insert(run_events),
                        [
                            {
                                "run_id": run_id,
                                "ts": now,
                                "level": EventLevel(e.level).value,
                                "customer_id": customer_id,
                                "system": e.system,
                                "event": e.event,
                                "detail": dict(e.detail),
                            }
                            for e in chunk.events
                        ],
                    )
        except sa.exc.IntegrityError:
            self._explain_lost_race(customer_id, chunk.members)
            raise

    def _explain_lost_race(self, customer_id: str, members: Sequence[MemberValues]) -> None:
        """Another link claimed a record between our check and insert: say which."""
        with self._read() as conn:
            for link_id, system, external_id, _, _ in members:
                holder = self._member_link(conn, customer_id, system, external_id)
                if holder is not None and holder != link_id:
                    raise DuplicateMember(
                        customer_id=customer_id,
                        system=system,
                        external_id=external_id,
                        link_id=holder,
                    ) from None

    def _set_members_on(
        self, conn: Connection, customer_id: str, members: Sequence[MemberValues]
    ) -> None:
        now = utcnow()
        link_ids = sorted({m[0] for m in members})
        conn.execute(
            self._upsert(links).on_conflict_do_nothing(index_elements=[links.c.id]),
            [{"id": i, "customer_id": customer_id, "created_at": now} for i in link_ids],
        )
        self._remember_first_link(conn, customer_id)
        for chunk in _chunks(link_ids):
            # Row locks on PostgreSQL: membership changes of one link run in turn.
            owners = conn.execute(
                sa.select(links.c.id, links.c.customer_id)
                .where(links.c.id.in_(chunk))
                .with_for_update()
            ).all()
            foreign = [row.id for row in owners if row.customer_id != customer_id]
            if foreign:
                raise NotFound(f"no link {foreign[0]} for customer {customer_id!r}")
        by_system: dict[str, dict[str, str]] = {}
        for link_id, system, external_id, _, _ in members:
            by_system.setdefault(system, {})[external_id] = link_id
        for system, wanted in by_system.items():
            for chunk in _chunks(sorted(wanted)):
                for row in conn.execute(
                    sa.select(link_members.c.link_id, link_members.c.external_id).where(
                        link_members.c.customer_id == customer_id,
                        link_members.c.system == system,
                        link_members.c.external_id.in_(chunk),
                    )
                ):
                    if row.link_id != wanted[row.external_id]:
                        raise DuplicateMember(
                            customer_id=customer_id,
                            system=system,
                            external_id=row.external_id,
                            link_id=row.link_id,
                        )
        member_stmt = self._upsert(link_members)
        conn.execute(
            member_stmt.on_conflict_do_update(
                index_elements=[link_members.c.link_id, link_members.c.system],
                set_={
                    "external_id": member_stmt.excluded.external_id,
                    "version": member_stmt.excluded.version,
                    "updated_at": member_stmt.excluded.updated_at,
                },
            ),
            [
                {
                    "link_id": link_id,
                    "system": system,
                    "customer_id": customer_id,
                    "external_id": external_id,
                    "version": version,
                    "updated_at": now,
                }
                for link_id, system, external_id, version, _ in members
            ],
        )
        fp_rows = [
            {"link_id": link_id, "system": system, "field": name, "fp": fp}
            for link_id, system, _, _, fps in members
            for name, fp in fps.items()
        ]
        if fp_rows:
            fp_stmt = self._upsert(fingerprint_table)
            conn.execute(
                fp_stmt.on_conflict_do_update(
                    index_elements=["link_id", "system", "field"],
                    set_={"fp": fp_stmt.excluded.fp},
                ),
                fp_rows,
            )

    def remove_member(self, customer_id: str, link_id: str, system: str) -> bool:
        """Drop the link's member for `system` with its fingerprints; drop the link too
        when no member is left. Returns whether there was such a member.
        """
        with self._write() as conn:
            return self._remove_member_on(conn, customer_id, link_id, system)

    def _remove_member_on(
        self, conn: Connection, customer_id: str, link_id: str, system: str
    ) -> bool:
        if not self._lock_link(conn, customer_id, link_id, missing_ok=True):
            return False
        conn.execute(
            sa.delete(fingerprint_table).where(
                fingerprint_table.c.link_id == link_id, fingerprint_table.c.system == system
            )
        )
        removed = conn.execute(
            sa.delete(link_members).where(
                link_members.c.link_id == link_id, link_members.c.system == system
            )
        ).rowcount
        left = conn.scalar(
            sa.select(sa.func.count())
            .select_from(link_members)
            .where(link_members.c.link_id == link_id)
        )
        if not left:
            self._remember_first_link(conn, customer_id)  # a store from before the record
            conn.execute(sa.delete(links).where(links.c.id == link_id))
        return removed > 0

    def find_member(self, customer_id: str, system: str, external_id: str) -> str | None:
        """The id of the link that has (system, external_id) as a member, if any."""
        with self._read() as conn:
            return self._member_link(conn, customer_id, system, external_id)

    def add_tombstones(self, customer_id: str, fingerprints: Iterable[str]) -> None:
        """Remember identifier fingerprints of erased subjects (idempotent)."""
        now = utcnow()
        rows = [
            {"customer_id": customer_id, "fp": fp, "created_at": now} for fp in set(fingerprints)
        ]
        if not rows:
            return
        with self._write() as conn:
            conn.execute(self._upsert(tombstones).values(rows).on_conflict_do_nothing())

    def get_cursor(self, customer_id: str, system: str, scope: str) -> str | None:
        """The stored read cursor (e.g. a Graph delta link), or None to read in full."""
        with self._read() as conn:
            return conn.scalar(
                sa.select(cursors.c.value).where(
                    cursors.c.customer_id == customer_id,
                    cursors.c.system == system,
                    cursors.c.scope == scope,
                )
            )

    def set_cursor(self, customer_id: str, system: str, scope: str, value: str | None) -> None:
        """Store the cursor for the next incremental read; None forgets it (full resync)."""
        with self._write() as conn:
            if value is None:
                conn.execute(
                    sa.delete(cursors).where(
                        cursors.c.customer_id == customer_id,
                        cursors.c.system == system,
                        cursors.c.scope == scope,
                    )
                )
                return
            stmt = self._upsert(cursors).values(
                customer_id=customer_id,
                system=system,
                scope=scope,
                value=value,
                updated_at=utcnow(),
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[cursors.c.customer_id, cursors.c.system, cursors.c.scope],
                    set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
                )
            )

    def _lock_link(
        self, conn: Connection, customer_id: str, link_id: str, *, missing_ok: bool = False
    ) -> bool:
        # Row lock on PostgreSQL, so membership changes of one link run one after the
        # other (otherwise two removals could each see the other's member and leave an
        # empty link behind). SQLite writers are serialised anyway.
        found = conn.scalar(
            sa.select(links.c.id)
            .where(links.c.id == link_id, links.c.customer_id == customer_id)
            .with_for_update()
        )
        if found is None and not missing_ok:
            raise NotFound(f"no link {link_id} for customer {customer_id!r}")
        return found is not None

    @staticmethod
    def _member_link(
        conn: Connection, customer_id: str, system: str, external_id: str
    ) -> str | None:
        return conn.scalar(
            sa.select(link_members.c.link_id).where(
                link_members.c.customer_id == customer_id,
                link_members.c.system == system,
                link_members.c.external_id == external_id,
            )
        )


def _chunks(values: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _pending_decision(resolution: object) -> bool:
    """A resolution that names a winner and has not been carried out yet."""
    return (
        isinstance(resolution, dict)
        and isinstance(resolution.get("winner"), str)
        and not resolution.get("carried_out")
    )
