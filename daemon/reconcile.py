"""The reconciler: records from every system plus stored state in, a plan out.

Pure: no I/O. Correlation first (stored links, then normalised e-mail, phone, name),
then a three-way merge per field against the keyed fingerprints of the last synced
values. The store holds those fingerprints per link, system and field, so "changed
in system S" means "S's value no longer matches what S held after the last sync".
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon import crypto, identity, incidents, normalize
from daemon.domain import ContactKind, ContactRecord, Operation, OpKind, Situation
from daemon.policy import ForeignChange, SyncPolicy
from daemon.state import PENDING, CustomerState, Member

RECORD = "_record"  # the pseudo-field of a dispute about a whole contact
# The pseudo-fields of review items about who a record is (see _Linker).
AMBIGUOUS_MATCH = "_ambiguous_match"
POSSIBLE_DUPLICATE = "_possible_duplicate"
REVIEWS = (AMBIGUOUS_MATCH, POSSIBLE_DUPLICATE)
SEPARATE = "separate"  # a review's answer: the record is a contact of its own
# Suffix of a member's pseudo-fingerprints: "title" + ASKED is the fingerprint of the title
# a manual task asked an operator to enter; that value turning up is the task done late,
# not a change made in that system.
ASKED = ">"
# A member's pseudo-fingerprint: whether the last read missed its record (once). Stored
# fingerprints are only ever overwritten, so "seen again" is a value of its own.
MISSED = "_missed"
_MISSED_MARK = "?" * 16
_SEEN_MARK = "=" * 16


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemView:
    """One directory system's records for one customer, as read this run."""

    system: str
    fields: frozenset[str]
    records: Sequence[ContactRecord]
    project: Callable[[ContactRecord], ContactRecord] = lambda record: (
        record
    )  # identity: same object
    quarantined: frozenset[str] = frozenset()  # external ids read as malformed


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedOp:
    op: Operation
    # The member's fingerprints once the op is applied (empty for DELETE).
    fingerprints: Mapping[str, str]
    # new | propagate | revert | deleted_in_authority | foreign_record | tombstone |
    # dispute_decided (a person's decision on a dispute carried out)
    reason: str
    changed_fields: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberUpdate:
    """A store change that needs no outside call: link a record, or refresh its baseline."""

    link_id: str
    system: str
    external_id: str
    version: str | None
    fingerprints: Mapping[str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class DisputeItem:
    link_id: str
    field: str
    fingerprints: Mapping[str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    customer_id: str
    ops: tuple[PlannedOp, ...] = ()
    members: tuple[MemberUpdate, ...] = ()
    removals: tuple[tuple[str, str], ...] = ()  # (link, system) whose record is gone for good
    disputes: tuple[DisputeItem, ...] = ()
    settled_disputes: tuple[tuple[str, str], ...] = ()  # (link, field) no longer in conflict
    # Ids of dispute decisions carried out (every system holds the winner's value) or moot.
    decided: tuple[int, ...] = ()
    situations: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    notes: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    total_contacts: int = 0

    @property
    def deleted_contacts(self) -> int:
        """Contacts this plan deletes, counted against the threshold: every deletion,
        erased data that reappeared included (a tombstone that suddenly matches many
        records is a question for a person, not a licence)."""
        return len({p.op.link_id for p in self.ops if p.op.kind is OpKind.DELETE})

    def counts(self) -> dict[str, int]:
        counter = Counter(f"{p.op.system}.{p.op.kind}" for p in self.ops)
        counter["disputes"] = len(self.disputes)
        counter["baselines"] = len(self.members)
        return dict(counter)

    @property
    def is_empty(self) -> bool:
        return not (self.ops or self.members or self.removals or self.disputes or self.decided)


@dataclass(slots=True)
class _Group:
    link_id: str
    stored: Mapping[str, Member]
    records: dict[str, ContactRecord] = field(default_factory=dict)
    is_new: bool = False
    held: bool = False  # under review: who it is is not known, so nothing is done with it
    # Systems whose record this read missed for the first time (not yet believed gone),
    # and systems whose record is back after such a miss.
    # (Immutable and shared while empty: a plan holds a group per contact.)
    missed: frozenset[str] = frozenset()
    back: frozenset[str] = frozenset()
    # Set by `fingerprint_ahead`: whether every system still holds what it held after the
    # last sync (None: not looked at), and the field fingerprints it took, by system.
    settled: bool | None = None
    ahead: dict[str, dict[str, str]] | None = None


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Planning allocates many small acyclic objects over a large live heap; the cyclic
    collector would rescan that heap again and again for nothing (a third of the time).

    What the plan made and keeps (its operations and baselines: a million objects for a
    large customer's first sync) is then moved to the oldest generation in one step
    (`freeze` and `unfreeze` splice lists), not scanned by the first collection after
    re-enabling and again by the next: that scan cost the 100k first plan 0.12 s. Only
    a full collection looks at them, and they are freed by reference count when the
    sync is done with them; a cycle made meanwhile is collected there too, later.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


class Reconciler:
    def __init__(self, *, customer_id: str, key: bytes, policy: SyncPolicy) -> None:
        self.customer_id = customer_id
        self.key = key
        self.policy = policy

    # -- correlation -------------------------------------------------------------------

    def _correlate(
        self, views: Mapping[str, SystemView], state: CustomerState, builder: _PlanBuilder
    ) -> tuple[list[_Group], dict[str, Counter[str]]]:
        situations: dict[str, Counter[str]] = {s: Counter() for s in views}
        by_id = (
            {s: {r.external_id: r for r in v.records} for s, v in views.items()}
            if state.links
            else {}
        )
        seen: dict[str, set[str]] = {s: set() for s in views}
        groups: list[_Group] = []
        for link in state.links.values():
            group = _Group(link_id=link.id, stored=link.members)
            for system, member in link.members.items():
                if system not in views:
                    continue
                record = by_id[system].get(member.external_id)
                if record is not None:
                    group.records[system] = record
                    seen[system].add(member.external_id)
                    situations[system][Situation.LINKED] += 1
                    if member.fingerprints.get(MISSED) == _MISSED_MARK:
                        group.back |= {system}
                elif member.external_id in views[system].quarantined:
                    pass
                elif (
                    system != self.policy.authority
                    and member.fingerprints.get(MISSED) != _MISSED_MARK
                ):
                    # A vendor's listing can leave a record out and show it again (an
                    # outage, a lagging replica): a record is gone when two reads in a
                    # row miss it. The authority (the card: one consistent read) is
                    # believed at once.
                    group.missed |= {system}
                    situations[system]["missed_once"] += 1
                else:
                    situations[system][Situation.DELETED] += 1
            groups.append(group)

        order = [self.policy.authority, *sorted(s for s in views if s != self.policy.authority)]
        unlinked = {
            s: [r for r in views[s].records if r.external_id not in seen[s]]
            for s in order
            if s in views
        }
        total = sum(len(v.records) for v in views.values())
        if not state.tombstones and sum(map(len, unlinked.values())) * 10 < total:
            # Only records that may link need to know what is shared: the unlinked ones
            # and those of contacts some system lacks (in the steady state, a few).
            interest: set[str] = set()
            for records in unlinked.values():
                for record in records:
                    interest |= identity.record_keys(record)
            for group in groups:
                if len(group.records) < len(views):
                    for record in group.records.values():
                        interest |= identity.record_keys(record)
            builder.use_directory(interest)
        for system, records in unlinked.items():
            if records:
                _Linker(self, builder, groups, system, situations[system]).link(records)
        return groups, situations

    # -- planning ----------------------------------------------------------------------

    def plan(self, views: Mapping[str, SystemView], state: CustomerState) -> Plan:
        with _no_cyclic_gc():
            return self._plan(views, state)

    def _plan(self, views: Mapping[str, SystemView], state: CustomerState) -> Plan:
        builder = _PlanBuilder(self, views, state)
        groups, situations = self._correlate(views, state, builder)
        reviewed = {(d.link_id, d.field) for d in builder.disputes if d.field in REVIEWS}
        builder.settled += [
            key for key in state.disputes if key[1] in REVIEWS and key not in reviewed
        ]
        for start in range(0, len(groups), _CHUNK):
            # A chunk of contacts at a time: fingerprinted together, then planned while
            # what that took is still in the CPU caches.
            chunk = groups[start : start + _CHUNK]
            builder.fingerprint_ahead(chunk)
            for group in chunk:
                builder.plan_group(group)
        if state.decisions:  # decisions about contacts no longer read are done with
            visited = {group.link_id for group in groups}
            builder.decided += [d.id for d in state.decisions.values() if d.link_id not in visited]
        authority = self.policy.authority
        total = sum(1 for g in groups if authority in g.records or authority in g.stored)
        return Plan(
            customer_id=self.customer_id,
            ops=tuple(builder.ops),
            members=tuple(builder.members),
            removals=tuple(builder.removals),
            disputes=tuple(builder.disputes),
            settled_disputes=tuple(builder.settled),
            decided=tuple(sorted(set(builder.decided))),
            situations={s: dict(c) for s, c in situations.items()},
            notes=tuple(builder.notes),
            total_contacts=total,
        )


# The list fields, and what makes two of their values the same value.
_LIST_FIELDS: dict[str, Callable[[Any], Any]] = {
    "emails": normalize.email,
    "phones": lambda phone: (phone.key, phone.type),
}


class _Linker:
    """Links one system's unlinked records to the contacts (groups) that lack that system.

    Evidence, strongest first (daemon/identity.py): a personal e-mail, then a personal
    phone; failing both, the name, when no personal identifier conflicts. A shared
    identifier never links, and kinds must agree (a department never joins a person).
    Several candidates, or a lone name match whose personal identifiers conflict, open a
    review item for a person (`AMBIGUOUS_MATCH`, `POSSIBLE_DUPLICATE`): the record is
    held, and the candidates get no copy of it in this system, until the review is
    answered with `SEPARATE` (a contact of its own) or the link id of the candidate it
    is.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        builder: _PlanBuilder,
        groups: list[_Group],
        system: str,
        situations: Counter[str],
    ) -> None:
        self.r = reconciler
        self.builder = builder
        self.directory = builder.directory
        self.groups = groups
        self.system = system
        self.situations = situations
        self.blocked = builder.blocked  # (link, system): under review, create nothing there
        # A held record (under review) is no candidate: it is nobody yet.
        # A contact whose record in this system a read missed is a candidate too: the
        # record may be back under a new id (re-created by someone).
        self.candidates = [
            i for i, g in enumerate(groups) if system not in g.records and not g.held
        ]
        # Candidates by kind, then personal identifier (an e-mail's or a phone's normal
        # form: they cannot be alike, one holds "@" and the other is "+" and digits): one
        # each, almost always (a set where not).
        self.by_id: dict[ContactKind, dict[str, int | set[int]]] = defaultdict(dict)
        personal_ids = self.directory.personal_ids
        for i in self.candidates:
            for record in groups[i].records.values():
                emails, phones = personal_ids(record)
                index = self.by_id[record.kind]
                for key in emails + phones:
                    held = index.setdefault(key, i)
                    if held != i:
                        index[key] = (held if isinstance(held, set) else {held}) | {i}
        self._by_name: dict[tuple[ContactKind, str], set[int]] | None = None

    @property
    def by_name(self) -> dict[tuple[ContactKind, str], set[int]]:
        """Candidates by kind and name: built on first use (most records link by an
        identifier)."""
        if self._by_name is None:
            self._by_name = defaultdict(set)
            for i in self.candidates:
                for record in self.groups[i].records.values():
                    for name in identity.record_names(record):
                        self._by_name[record.kind, name].add(i)
        return self._by_name

    def _match(self, record: ContactRecord) -> tuple[int | set[int] | None, str | None]:
        """The candidate groups for `record` (one as its index, several as a set, or
        None), and the review it needs (or None)."""
        index = self.by_id.get(record.kind)
        if index:
            for tier in self.directory.personal_ids(record):  # e-mails, then phones
                found: int | set[int] | None = None
                for key in tier:
                    held = index.get(key)
                    if held is None or held == found:
                        continue
                    # Several candidates: a set (one in the index holds two or more).
                    found = held if found is None else _candidates(found) | _candidates(held)
                if found is not None:
                    return found, (AMBIGUOUS_MATCH if isinstance(found, set) else None)
        named: set[int] = set()
        for name in identity.record_names(record):
            named |= self.by_name.get((record.kind, name), set())
        if len(named) > 1:
            return named, AMBIGUOUS_MATCH
        if not named:
            return None, None
        (i,) = named
        if any(self.directory.conflict(record, other) for other in self.groups[i].records.values()):
            return named, POSSIBLE_DUPLICATE
        return i, None

    def link(self, unlinked: Sequence[ContactRecord]) -> None:
        # The record each contact is claimed by (a list when several claim it), by the
        # contact's index: a list, not a table, as a large customer's table would not fit
        # the CPU caches and the claims come in this system's order, not the contacts'.
        claims: list[ContactRecord | list[ContactRecord] | None] = [None] * len(self.groups)
        unmatched: list[ContactRecord] = []
        reviews: list[tuple[ContactRecord, set[int], str]] = []
        match = self._match if self.candidates else None
        for record in unlinked:
            found, review = match(record) if match else (None, None)
            if found is None:
                unmatched.append(record)
            elif review is not None:
                reviews.append((record, _candidates(found), review))
            elif isinstance(found, int):
                held = claims[found]
                if held is None:
                    claims[found] = record
                else:
                    claims[found] = [*held, record] if isinstance(held, list) else [held, record]
        # The contacts in the order they lie in memory (made in that order), not this
        # system's: a large customer's fill more than the CPU caches.
        for i, claim in enumerate(claims):
            if claim is None:
                continue
            if isinstance(claim, list):  # several records of this system claim one contact
                reviews += [(record, {i}, AMBIGUOUS_MATCH) for record in claim]
            else:
                self._join(i, claim)
        for record, candidates, review in reviews:
            self._review(record, candidates, review)
        for record in unmatched:
            self.situations[Situation.UNMATCHED] += 1
            self.groups.append(self._new_group(record))

    def _join(self, i: int, record: ContactRecord) -> None:
        group = self.groups[i]
        group.records[self.system] = record
        if group.missed:
            group.missed -= {self.system}  # its record is found, under another id
        self.situations[Situation.UNLINKED] += 1

    def _new_group(self, record: ContactRecord) -> _Group:
        return _Group(
            link_id=new_link_id(self.r.customer_id, self.system, record.external_id),
            stored={},
            records={self.system: record},
            is_new=True,
        )

    def _review(self, record: ContactRecord, found: set[int], review: str) -> None:
        group = self._new_group(record)
        # The answers: SEPARATE, or "same:" and the start of a candidate's link id.
        candidates = {same_as(self.groups[i].link_id): i for i in found}
        decision = self.builder.state.decisions.get((group.link_id, review))
        if decision is not None:
            self.builder.decided.append(decision.id)
            if decision.winner == SEPARATE:
                self.situations[Situation.UNMATCHED] += 1
                self.groups.append(group)
                return
            target = candidates.get(decision.winner)
            if target is not None and self.system not in self.groups[target].records:
                self._join(target, record)
                return
            # Moot: the chosen contact is no candidate any more. Ask again.
        self.situations[Situation.DISPUTED] += 1
        group.held = True
        self.groups.append(group)
        self.blocked.update((self.groups[i].link_id, self.system) for i in found)
        self.builder.disputes.append(
            DisputeItem(
                link_id=group.link_id,
                field=review,
                # Each answer a person may give, with the records it stands for (ids
                # only): the held record alone, or one of the candidate contacts.
                fingerprints={SEPARATE: f"{self.system}:{record.external_id}"}
                | {
                    answer: ", ".join(
                        f"{s}:{r.external_id}" for s, r in sorted(self.groups[i].records.items())
                    )
                    for answer, i in candidates.items()
                },
            )
        )


def _candidates(found: int | set[int]) -> set[int]:
    return found if isinstance(found, set) else {found}


def same_as(link_id: str) -> str:
    """A review's answer that a held record is the contact `link_id` (short to type)."""
    return "same:" + link_id[:8]


def new_link_id(customer_id: str, system: str, external_id: str) -> str:
    """The link of a record no stored link points at: the same on every run.

    `uuid.uuid5(NAMESPACE_URL, "pdsync:<customer>:<system>:<id>")`, spelt out: a first
    sync makes one per contact, and the UUID objects cost more than the hash.
    """
    name = f"pdsync:{customer_id}:{system}:{external_id}".encode()
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


# Contacts planned at a time: what `Fingerprinter.many` keeps of a chunk (the values of
# every system, their fingerprints) stays in the CPU caches until the chunk is planned,
# where a large customer's all at once would not (each value would be a cache miss).
# A chunk's records, their values and rows take some 2 KB a contact: 512 contacts fit a
# core's L2 cache (2 MB here); 2,048 did not (the 100k first plan: 3.16 s, not 3.22 s).
_CHUNK = 512


class _PlanBuilder:
    def __init__(
        self,
        reconciler: Reconciler,
        views: Mapping[str, SystemView],
        state: CustomerState,
    ) -> None:
        self.r = reconciler
        self.key = reconciler.key
        self.policy = reconciler.policy
        self.views = views
        self.state = state
        self.blocked: set[tuple[str, str]] = set()  # filled by _Linker
        self.ops: list[PlannedOp] = []
        self.members: list[MemberUpdate] = []
        self.removals: list[tuple[str, str]] = []
        self.disputes: list[DisputeItem] = []
        self.settled: list[tuple[str, str]] = []
        self.decided: list[int] = []
        self.by_decision: set[tuple[str, str]] = set()  # (link, system) written as decided
        self.notes: list[tuple[str, Mapping[str, Any]]] = []
        self.sorted_fields = {s: tuple(sorted(v.fields)) for s, v in views.items()}
        self.dispute_links = {link_id for link_id, _ in state.disputes} | {
            link_id for link_id, _ in state.decisions
        }
        self._directory: identity.Directory | None = None
        self.fingerprinter = crypto.Fingerprinter(self.key)
        self._pairs: dict[tuple[str, str], tuple[str, ...]] = {}

    def use_directory(self, only: set[str]) -> None:
        """Build the directory for questions about the identifiers `only`."""
        self._directory = identity.Directory(
            (r for view in self.views.values() for r in view.records),
            self.policy.identity,
            only=only,
        )

    @property
    def directory(self) -> identity.Directory:
        """Which identifiers are personal, from every record read this run (built once,
        only when needed: the steady state of a customer without erasures never is)."""
        if self._directory is None:
            self._directory = identity.Directory(
                (r for view in self.views.values() for r in view.records),
                self.policy.identity,
            )
        return self._directory

    def _op_id(self, link_id: str, system: str, kind: OpKind, detail: str) -> str:
        return Operation.make_id(self.r.customer_id, link_id, system, str(kind), detail)

    def _fingerprints(self, system: str, record: ContactRecord) -> dict[str, str]:
        return self.fingerprinter.record(record, self.sorted_fields[system])

    def fingerprint_ahead(self, groups: Sequence[_Group]) -> None:
        """Settle, contact by contact, whether every system still holds what it held
        after the last sync (its record's digest is the stored one: the fast path); and
        take the field fingerprints of every contact not settled (a new link, a changed
        record) a system at a time, as `_merge_fields` would one by one, for less."""
        fp = self.fingerprinter
        changed: dict[str, list[ContactRecord]] = defaultdict(list)
        owners: dict[str, list[_Group]] = defaultdict(list)
        digests: dict[str, list[str | None]] = defaultdict(list)
        for group in groups:
            if group.held or group.missed or not group.records:
                continue  # planned without its fingerprints, if at all
            group.settled = False
            stored = group.stored
            if not stored:  # a new link: nothing to compare with, all to fingerprint
                for system, record in group.records.items():
                    changed[system].append(record)
                    owners[system].append(group)
                    digests[system].append(None)
                continue
            mine = {s: fp.digest(r, self.sorted_fields[s]) for s, r in group.records.items()}
            if group.link_id not in self.dispute_links and all(
                s in stored and stored[s].fingerprints.get(crypto.ALL) == digest
                for s, digest in mine.items()
            ):
                group.settled = True
                continue
            for system, record in group.records.items():
                changed[system].append(record)
                owners[system].append(group)
                digests[system].append(mine[system])
        for system, records in changed.items():
            rows = fp.many(records, self.sorted_fields[system], digests.pop(system))
            for group, row in zip(owners.pop(system), rows, strict=True):
                if group.ahead is None:
                    group.ahead = {}
                group.ahead[system] = row
        fp.forget_columns()

    def _unchanged(self, group: _Group) -> bool:
        """Whether every system still holds what it held after the last sync."""
        if group.settled is not None:
            return group.settled
        stored = group.stored
        return group.link_id not in self.dispute_links and all(
            s in stored
            and stored[s].fingerprints.get(crypto.ALL)
            == self.fingerprinter.digest(r, self.sorted_fields[s])
            for s, r in group.records.items()
        )

    def plan_group(self, group: _Group) -> None:
        for system, member in group.stored.items():
            if system in self.views and member.external_id in self.views[system].quarantined:
                self.notes.append(
                    ("skipped_quarantined", {"link": group.link_id, "system": system})
                )
                return
        if self.state.tombstones and any(
            self.directory.tombstone_hits(self.key, r, self.state.tombstones)
            for r in group.records.values()
        ):
            # Erased data came back (restored from a backup, typed in again): erase it
            # again, and say so loudly.
            self.notes.append(
                (
                    incidents.ERASED_DATA_REAPPEARED,
                    {"link": group.link_id, "systems": sorted(group.records)},
                )
            )
            self._delete_everywhere(group, reason="tombstone")
            return
        if group.held:
            return  # a person decides who this record is first (a review item is open)
        for system in sorted(group.back):
            self._mark_missed(group, system, _SEEN_MARK)
        if group.missed:
            # Missed once: noted, and nothing done with the contact until the next read
            # says whether the record is gone.
            for system in sorted(group.missed):
                self._mark_missed(group, system, _MISSED_MARK)
            return
        if not group.records:
            # Gone from every system read: the link is done with (a deletion confirmed
            # everywhere), and any question about the record with it.
            self.removals += [(group.link_id, s) for s in group.stored if s in self.views]
            if (group.link_id, RECORD) in self.state.disputes:
                self.settled.append((group.link_id, RECORD))
            decision = self.state.decisions.get((group.link_id, RECORD))
            if decision is not None:
                self.decided.append(decision.id)
            return
        authority = self.policy.authority
        present = group.records
        if authority in present:
            self._with_authority(group)
        elif authority in group.stored:
            self._deleted_in_authority(group)
        else:
            self._foreign_only(group)

    def _mark_missed(self, group: _Group, system: str, mark: str) -> None:
        """Note on the stored member whether the last read missed its record."""
        member = group.stored[system]
        self.members.append(
            MemberUpdate(
                link_id=group.link_id,
                system=system,
                external_id=member.external_id,
                version=member.version,
                fingerprints={**member.fingerprints, MISSED: mark},
            )
        )

    # A contact the authority holds: create where missing, merge fields where present.
    def _with_authority(self, group: _Group) -> None:
        authority = self.policy.authority
        source = group.records[authority]
        decision = self.state.decisions.get((group.link_id, RECORD))
        disputes_before = len(self.disputes)
        questioned = False  # whether this run asks whether the record stands
        for system in self.views:
            if system == authority or system in group.records:
                continue
            if system in group.stored:  # deleted outside the authority
                choice = self.policy.on_foreign_change
                if choice is ForeignChange.PROPAGATE:
                    self._delete_everywhere(group, reason="deleted_in_" + system)
                    return
                if choice is ForeignChange.DISPUTE:
                    questioned = True
                    if decision is not None and decision.winner == system:
                        # A person decided the deletion stands: delete it everywhere.
                        self.decided.append(decision.id)
                        self._delete_everywhere(group, reason="dispute_decided")
                        return
                    if decision is None or decision.winner != authority:
                        self._dispute(group, RECORD, {system: "deleted", authority: "present"})
                        continue
                    # ... or that the record stands: put it back, as a revert would.
                self.removals.append((group.link_id, system))
                self._create(group, system, source, reason="revert")
            elif (group.link_id, system) not in self.blocked:
                self._create(group, system, source, reason="new")
        if (group.link_id, RECORD) in self.state.disputes and not any(
            d.field == RECORD for d in self.disputes[disputes_before:]
        ):
            self.settled.append((group.link_id, RECORD))
        if decision is not None and not questioned:
            self.decided.append(decision.id)  # carried out: the record is everywhere again
        self._merge_fields(group)

    def _deleted_in_authority(self, group: _Group) -> None:
        # The authority's side of the link stays until every other system has confirmed
        # its deletion (the executor removes each member as its delete lands): a delete
        # that fails, conflicts, waits for an operator or is cut short by a crash is
        # planned again next run, never mistaken for a record of that system's own.
        self._delete_everywhere(group, reason="deleted_in_authority", keep=self.policy.authority)

    def _foreign_only(self, group: _Group) -> None:
        choice = self.policy.on_foreign_record
        if choice is ForeignChange.REVERT:
            self._delete_everywhere(group, reason="foreign_record")
            return
        decision = self.state.decisions.get((group.link_id, RECORD))
        if decision is not None and decision.winner not in group.records:
            self.decided.append(decision.id)  # moot: the winner no longer holds the record
            decision = None
        if choice is ForeignChange.DISPUTE and decision is None:
            self._dispute(group, RECORD, {s: "present" for s in group.records})
            self._refresh_baselines(group, {}, set())
            return
        if decision is not None:  # a person decided the record stands, as `winner` holds it
            source = group.records[decision.winner]
        else:
            _, source = next(iter(sorted(group.records.items())))
        for target in self.views:
            if target not in group.records and (group.link_id, target) not in self.blocked:
                self._create(group, target, source, reason="propagate")
        self._merge_fields(group)

    def _delete_everywhere(self, group: _Group, *, reason: str, keep: str | None = None) -> None:
        for system, record in sorted(group.records.items()):
            op = Operation(
                op_id=self._op_id(group.link_id, system, OpKind.DELETE, record.external_id),
                kind=OpKind.DELETE,
                system=system,
                link_id=group.link_id,
                external_id=record.external_id,
                expected_version=record.version,
            )
            self.ops.append(PlannedOp(op=op, fingerprints={}, reason=reason))
        for system in group.stored:
            if system == keep and group.records:
                continue
            if system not in group.records and (group.link_id, system) not in self.removals:
                self.removals.append((group.link_id, system))

    def _create(self, group: _Group, system: str, source: ContactRecord, *, reason: str) -> None:
        view = self.views[system]
        target = view.project(source)
        values = {name: getattr(target, name) for name in view.fields}
        fps = self._fingerprints(system, target)
        op = Operation(
            op_id=self._op_id(group.link_id, system, OpKind.CREATE, fps[crypto.ALL]),
            kind=OpKind.CREATE,
            system=system,
            link_id=group.link_id,
            values=values,
        )
        self.ops.append(
            PlannedOp(op=op, fingerprints=fps, reason=reason, changed_fields=tuple(sorted(values)))
        )

    def _dispute(self, group: _Group, name: str, fingerprints: Mapping[str, str]) -> None:
        self.disputes.append(
            DisputeItem(link_id=group.link_id, field=name, fingerprints=dict(fingerprints))
        )

    # -- the three-way merge -------------------------------------------------------------

    def _merge_fields(self, group: _Group) -> None:
        if self._unchanged(group):
            return  # the fast path
        present = group.records
        stored = {s: m.fingerprints for s, m in group.stored.items()}
        current = self._current(group)
        if not stored and group.link_id not in self.dispute_links and self._agree(current):
            # Newly linked and holding the same values everywhere (the bulk of a first
            # sync): nothing to write, only baselines to record.
            self._refresh_baselines(group, {}, (), current)
            return
        writes: dict[str, dict[str, Any]] = defaultdict(dict)
        disputed: set[str] = set()
        projected: dict[tuple[str, str], ContactRecord] = {}
        for name in self._fields(present):
            holders = [s for s in sorted(present) if name in self.views[s].fields]
            if len(holders) < 2:
                continue
            self._merge_field(group, name, holders, current, stored, writes, disputed, projected)
        for system, values in writes.items():
            record = present[system]
            after = self.views[system].project(record.with_values(values))
            fps = self._fingerprints(system, after)
            for name in disputed:  # a disputed field keeps its old baseline
                if name in stored.get(system, {}):
                    fps[name] = stored[system][name]
                else:
                    fps.pop(name, None)
            if disputed:
                fps[crypto.ALL] = PENDING
            op = Operation(
                op_id=self._op_id(group.link_id, system, OpKind.UPDATE, fps[crypto.ALL]),
                kind=OpKind.UPDATE,
                system=system,
                link_id=group.link_id,
                external_id=record.external_id,
                values=values,
                expected_version=record.version,
            )
            if (group.link_id, system) in self.by_decision:
                reason = "dispute_decided"
            elif system == self.policy.authority:
                reason = "revert"
            else:
                reason = "propagate"
            self.ops.append(
                PlannedOp(
                    op=op, fingerprints=fps, reason=reason, changed_fields=tuple(sorted(values))
                )
            )
        # A value on its way to other systems keeps its old baseline at the source until
        # the writes are applied: if one fails, the next run still sees where it came from.
        in_flight = {name for values in writes.values() for name in values}
        self._refresh_baselines(group, writes, disputed | in_flight, current)

    def _current(self, group: _Group) -> dict[str, dict[str, str]]:
        """Each system's fingerprints of its record: as `fingerprint_ahead` took them
        (each taken once: the caller may keep them), or now; a value held exactly as a
        system before it holds it costs no new fingerprint."""
        current: dict[str, dict[str, str]] = {}
        first: tuple[ContactRecord, dict[str, str]] | None = None
        ahead = group.ahead or {}
        for system, record in group.records.items():
            names = self.sorted_fields[system]
            taken = ahead.pop(system, None)
            if taken is not None:
                current[system] = taken
                first = first or (record, taken)
            elif first is None:
                current[system] = self.fingerprinter.record(record, names)
                first = (record, current[system])
            else:
                current[system] = self.fingerprinter.record_like(record, names, *first)
        return current

    def _agree(self, current: Mapping[str, Mapping[str, str]]) -> bool:
        """Whether every system holds the same value of every field it shares."""
        systems = list(current)
        for i, a in enumerate(systems):
            for b in systems[i + 1 :]:
                fa, fb = current[a], current[b]
                for name in self._shared_fields(a, b):
                    if fa[name] != fb[name]:
                        return False
        return True

    def _shared_fields(self, a: str, b: str) -> tuple[str, ...]:
        found = self._pairs.get((a, b))
        if found is None:
            found = self._pairs[a, b] = tuple(self.views[a].fields & self.views[b].fields)
        return found

    def _fields(self, present: Mapping[str, ContactRecord]) -> list[str]:
        names: set[str] = set()
        for system in present:
            names |= self.views[system].fields
        return sorted(names)

    def _merge_field(
        self,
        group: _Group,
        name: str,
        holders: list[str],
        current: Mapping[str, Mapping[str, str]],
        stored: Mapping[str, Mapping[str, str]],
        writes: dict[str, dict[str, Any]],
        disputed: set[str],
        projected: dict[tuple[str, str], ContactRecord],
    ) -> None:
        present = group.records
        policy = self.policy.for_field(name)
        authority = policy.authority if policy.authority in holders else None
        if authority is None:
            authority = self.policy.authority if self.policy.authority in holders else holders[0]

        def in_system(system: str, source: str) -> ContactRecord:
            """`source`'s record as `system` would hold it (cached per group)."""
            record = projected.get((system, source))
            if record is None:
                record = projected[system, source] = self.views[system].project(present[source])
            return record

        def value_in(system: str, source: str) -> Any:
            return getattr(in_system(system, source), name)

        def fp_of(system: str, source: str) -> str:
            if system == source or in_system(system, source) is present[source]:
                return current[source][name]  # held as is: no new fingerprint needed
            return self.fingerprinter.field(name, value_in(system, source))

        def differing(source: str) -> list[str]:
            return [s for s in holders if s != source and current[s][name] != fp_of(s, source)]

        asked = name + ASKED  # the value pdsync asked an operator to enter there
        changed = [
            s
            for s in holders
            if name in stored.get(s, {})
            and current[s][name] != stored[s][name]
            and current[s][name] != stored[s].get(asked)
        ]
        decision = self.state.decisions.get((group.link_id, name))
        if decision is not None:
            winner = decision.winner
            if winner in holders and current[winner][name] == decision.fingerprints.get(winner):
                targets = differing(winner)
                for target in targets:
                    writes[target][name] = value_in(target, winner)
                    self.by_decision.add((group.link_id, target))
                if not targets:
                    self.decided.append(decision.id)  # carried out: they all agree now
                return
            self.decided.append(decision.id)  # moot: the winner's value changed since
        open_dispute = (group.link_id, name) in self.state.disputes
        if open_dispute:
            if differing(authority):
                disputed.add(name)
                self._dispute(group, name, {s: current[s][name] for s in holders})
            else:
                self.settled.append((group.link_id, name))
            return

        source = authority
        authority_moved = authority in changed or name not in stored.get(authority, {})
        if authority_moved:
            conflicts = [s for s in changed if s != authority and s in differing(authority)]
            if conflicts:
                disputed.add(name)
                self._dispute(group, name, {s: current[s][name] for s in holders})
                return
        else:
            foreign = [s for s in changed if s != authority and s in differing(authority)]
            if foreign:
                if policy.on_foreign_change is ForeignChange.DISPUTE:
                    disputed.add(name)
                    self._dispute(group, name, {s: current[s][name] for s in holders})
                    return
                if policy.on_foreign_change is ForeignChange.PROPAGATE:
                    if len({current[s][name] for s in foreign}) > 1:
                        disputed.add(name)
                        self._dispute(group, name, {s: current[s][name] for s in holders})
                        return
                    source = foreign[0]
        for target in differing(source):
            writes[target][name] = self._carried(group, name, source, target, value_in)

    def _carried(
        self,
        group: _Group,
        name: str,
        source: str,
        target: str,
        value_in: Callable[[str, str], Any],
    ) -> Any:
        """`source`'s value of `name` as `target` is to hold it.

        A list (e-mails, phones) from a system that holds less than the target (Zisson's
        XML API holds one address, Outlook three) changes only what the source could
        hold: the target keeps the values the source cannot hold, after the source's.
        """
        value = value_in(target, source)
        if name not in _LIST_FIELDS:
            return value
        present = group.records
        kept = getattr(present[target], name)
        key = _LIST_FIELDS[name]
        holdable = {key(v) for v in getattr(self.views[source].project(present[target]), name)}
        beyond = [v for v in kept if key(v) not in holdable]
        if not beyond:
            return value
        carried = list(getattr(present[source], name))
        seen = {key(v) for v in carried}
        merged = tuple(carried + [v for v in beyond if key(v) not in seen])
        return getattr(
            self.views[target].project(present[source].with_values({name: merged})), name
        )

    def _refresh_baselines(
        self,
        group: _Group,
        writes: Mapping[str, Mapping[str, Any]],
        held: Iterable[str],
        current: Mapping[str, dict[str, str]] | None = None,
    ) -> None:
        """Record what each untouched system holds now as its synced baseline.

        Fields in `held` (disputed, or being written elsewhere) keep their old baseline.
        """
        held = set(held)
        for system, record in group.records.items():
            if system in writes:
                continue  # the executor stores the baseline once the write is applied
            old = group.stored.get(system)
            if not current:
                fps = self._fingerprints(system, record)
            elif held or old is not None:
                fps = dict(current[system])  # changed below
            else:  # a new link's baseline: the fingerprints as taken (no one else keeps them)
                fps = current[system]
            for name in held:
                if old is not None and name in old.fingerprints:
                    fps[name] = old.fingerprints[name]
                else:
                    fps.pop(name, None)
            if held:
                fps[crypto.ALL] = PENDING  # never matches: the next run looks field by field
            if old is not None and MISSED in old.fingerprints:
                fps[MISSED] = _SEEN_MARK  # present now, whatever a read before said
            if (
                old is not None
                and old.external_id == record.external_id
                and {k: v for k, v in old.fingerprints.items() if not k.endswith(ASKED)} == fps
            ):
                continue
            self.members.append(
                MemberUpdate(
                    link_id=group.link_id,
                    system=system,
                    external_id=record.external_id,
                    version=record.version,
                    fingerprints=fps,
                )
            )
