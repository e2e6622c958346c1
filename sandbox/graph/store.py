"""The simulated Exchange mailboxes: folders, messages, contact folders and contacts.

Ids follow Exchange's two formats. Every message has an ImmutableId that survives
moves, and a "regular" REST id that encodes its folder: a move (including DELETE,
which moves to Deleted Items) gives it a new regular id and the old one stops
resolving. Both formats are accepted as input. Contacts and folders never move here,
so they have one id each.

Deleting is Exchange's: DELETE moves a message to Deleted Items; from Deleted Items to
Recoverable Items/Deletions (still reachable as the well-known folder
`recoverableitemsdeletions`); from there, or by `permanentDelete` from anywhere, to
Recoverable Items/Purges, which Graph cannot see at all.

Not thread-safe on its own: `GraphState.lock` guards every mailbox.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sandbox.graph.errors import GraphError, not_found

# well-known name -> (display name in a Norwegian tenant, parent, visible in listings)
MAIL_FOLDERS: dict[str, tuple[str, str | None, bool]] = {
    "msgfolderroot": ("Øverste nivå av informasjonslager", None, True),
    "inbox": ("Innboks", "msgfolderroot", True),
    "drafts": ("Utkast", "msgfolderroot", True),
    "sentitems": ("Sendte elementer", "msgfolderroot", True),
    "deleteditems": ("Slettede elementer", "msgfolderroot", True),
    "archive": ("Arkiv", "msgfolderroot", True),
    "junkemail": ("Søppelpost", "msgfolderroot", True),
    "outbox": ("Utboks", "msgfolderroot", True),
    "recoverableitemsroot": ("Recoverable Items", None, False),
    "recoverableitemsdeletions": ("Deletions", "recoverableitemsroot", False),
    "recoverableitemspurges": ("Purges", "recoverableitemsroot", False),
}
# Graph resolves these names; Recoverable Items' root and Purges it does not.
GRAPH_WELL_KNOWN = frozenset(MAIL_FOLDERS) - {"recoverableitemsroot", "recoverableitemspurges"}


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None
    visible: bool = True


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    address: str


@dataclass
class Message:
    serial: int
    immutable_id: str
    regular_id: str
    folder_id: str
    subject: str
    body: str
    sender: Address
    to: list[Address]
    cc: list[Address]
    received: dt.datetime
    created: dt.datetime
    modified: dt.datetime
    conversation_id: str
    internet_message_id: str
    version: int = 1  # bumped on every change, moves included; drives delta and changeKey
    generation: int = 0  # bumped on every move; part of the regular id


@dataclass
class Contact:
    id: str
    folder_id: str
    fields: dict[str, Any]
    created: dt.datetime
    modified: dt.datetime
    version: int = 1
    # singleValueExtendedProperties: property id ("String {guid} Name x") -> value
    extended: dict[str, str] = field(default_factory=dict)


EXTENDED = "singleValueExtendedProperties"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


@dataclass
class Mailbox:
    upn: str
    id: str
    key: bytes
    folders: dict[str, Folder] = field(default_factory=dict)
    well_known: dict[str, str] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)  # immutable id -> message
    regular: dict[str, str] = field(default_factory=dict)  # current regular id -> immutable id
    purged: list[Message] = field(default_factory=list)
    contact_folders: dict[str, Folder] = field(default_factory=dict)
    default_contacts: str = ""
    contacts: dict[str, Contact] = field(default_factory=dict)
    serial: int = 0

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def _folder_id(self, kind: bytes) -> str:
        return "AAMkAD" + _b64(self.key + kind + self._next().to_bytes(4, "big"))

    # -- mail folders ---------------------------------------------------------------------

    def create_well_known(self) -> None:
        for name, (display, parent, visible) in MAIL_FOLDERS.items():
            folder_id = self._folder_id(b"\x01")
            parent_id = self.well_known[parent] if parent else None
            self.folders[folder_id] = Folder(folder_id, display, parent_id, name, visible)
            self.well_known[name] = folder_id
        self.default_contacts = self._folder_id(b"\x05")
        self.contact_folders[self.default_contacts] = Folder(
            self.default_contacts, "Kontakter", self.well_known["msgfolderroot"], "contacts"
        )

    def folder(self, ref: str, *, graph: bool = True) -> Folder:
        """A mail folder by id or well-known name; `graph` hides what Graph cannot reach."""
        name = ref.lower()
        if name in self.well_known and (not graph or name in GRAPH_WELL_KNOWN):
            return self.folders[self.well_known[name]]
        folder = self.folders.get(ref)
        if folder is None or (graph and folder.well_known not in (None, *GRAPH_WELL_KNOWN)):
            raise not_found()
        return folder

    def add_folder(self, display_name: str, parent: str) -> Folder:
        parent_folder = self.folder(parent)
        if not display_name.strip():
            raise GraphError(400, "ErrorInvalidRequest", "The folder name cannot be empty.")
        for existing in self.child_folders(parent_folder.id):
            if existing.display_name.casefold() == display_name.casefold():
                raise GraphError(
                    409,
                    "ErrorFolderExists",
                    "A folder with the specified name already exists.",
                )
        folder = Folder(self._folder_id(b"\x01"), display_name, parent_folder.id)
        self.folders[folder.id] = folder
        return folder

    def child_folders(self, folder_id: str) -> list[Folder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id and f.visible]

    def in_graph_view(self, folder_id: str) -> bool:
        folder = self.folders[folder_id]
        return folder.visible or folder.well_known == "recoverableitemsdeletions"

    # -- messages -------------------------------------------------------------------------

    def _regular_id(self, message: Message) -> str:
        folder_serial = self.folders[message.folder_id].id[-12:].encode("ascii")
        return "AAMkAD" + _b64(
            self.key
            + b"\x03"
            + folder_serial
            + message.serial.to_bytes(6, "big")
            + message.generation.to_bytes(2, "big")
        )

    def add_message(
        self,
        folder: str,
        *,
        subject: str,
        body: str,
        sender: Address,
        to: Iterable[Address],
        cc: Iterable[Address],
        received: dt.datetime,
    ) -> Message:
        target = self.folder(folder, graph=False)
        if target.well_known in ("recoverableitemsroot", "recoverableitemspurges"):
            raise GraphError(400, "ErrorInvalidRequest", "Nothing is delivered to that folder.")
        serial = self._next()
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        message = Message(
            serial=serial,
            immutable_id="AAkALgAA" + _b64(self.key + b"\x02" + serial.to_bytes(6, "big")),
            regular_id="",
            folder_id=target.id,
            subject=subject,
            body=body,
            sender=sender,
            to=list(to),
            cc=list(cc),
            received=received,
            created=now,
            modified=now,
            conversation_id="AAQkAD" + _b64(self.key + serial.to_bytes(6, "big")),
            internet_message_id=f"<{serial}.{self.id}@sandbox.local>",
        )
        message.regular_id = self._regular_id(message)
        self.messages[message.immutable_id] = message
        self.regular[message.regular_id] = message.immutable_id
        return message

    def message(self, ref: str) -> Message:
        """A message Graph can reach, by ImmutableId or current regular id."""
        message = self.messages.get(ref) or self.messages.get(self.regular.get(ref, ""))
        if message is None or not self.in_graph_view(message.folder_id):
            raise not_found()
        return message

    def messages_in(self, folder_id: str) -> list[Message]:
        return [m for m in self.messages.values() if m.folder_id == folder_id]

    def graph_messages(self) -> list[Message]:
        """What GET /messages lists: every message in a visible folder."""
        return [m for m in self.messages.values() if self.folders[m.folder_id].visible]

    def move(self, message: Message, folder_id: str) -> Message:
        del self.regular[message.regular_id]
        message.folder_id = folder_id
        message.generation += 1
        message.version += 1
        message.modified = dt.datetime.now(dt.UTC).replace(microsecond=0)
        message.regular_id = self._regular_id(message)
        self.regular[message.regular_id] = message.immutable_id
        return message

    def delete(self, message: Message) -> None:
        """DELETE: one step down Exchange's deletion ladder."""
        current = self.folders[message.folder_id].well_known
        if current == "deleteditems":
            self.move(message, self.well_known["recoverableitemsdeletions"])
        elif current == "recoverableitemsdeletions":
            self.purge(message)
        else:
            self.move(message, self.well_known["deleteditems"])

    def purge(self, message: Message) -> None:
        self.move(message, self.well_known["recoverableitemspurges"])
        del self.messages[message.immutable_id]
        del self.regular[message.regular_id]
        self.purged.append(message)

    # -- contacts -------------------------------------------------------------------------

    def contact_folder(self, ref: str) -> Folder:
        folder = self.contact_folders.get(ref)
        if folder is None:
            raise not_found()
        return folder

    def add_contact_folder(self, display_name: str) -> Folder:
        if not display_name.strip():
            raise GraphError(400, "ErrorInvalidRequest", "The folder name cannot be empty.")
        for existing in self.contact_folders.values():
            if existing.display_name.casefold() == display_name.casefold():
                raise GraphError(
                    409, "ErrorFolderExists", "A folder with the specified name already exists."
                )
        folder = Folder(self._folder_id(b"\x05"), display_name, self.default_contacts)
        self.contact_folders[folder.id] = folder
        return folder

    def delete_contact_folder(self, folder_id: str) -> None:
        if folder_id == self.default_contacts:
            raise GraphError(
                403, "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."
            )
        self.contact_folder(folder_id)
        del self.contact_folders[folder_id]
        for contact_id in [c.id for c in self.contacts.values() if c.folder_id == folder_id]:
            del self.contacts[contact_id]

    def add_contact(self, folder_id: str, fields: dict[str, Any]) -> Contact:
        self.contact_folder(folder_id)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        contact_id = "AAMkAD" + _b64(self.key + b"\x04" + self._next().to_bytes(6, "big"))
        fields = dict(fields)
        extended = fields.pop(EXTENDED, {})
        contact = Contact(contact_id, folder_id, fields, now, now, extended=dict(extended))
        self.contacts[contact_id] = contact
        return contact

    def contact(self, ref: str, folder_id: str | None = None) -> Contact:
        contact = self.contacts.get(ref)
        if contact is None or (folder_id is not None and contact.folder_id != folder_id):
            raise not_found()
        return contact

    def contacts_in(self, folder_id: str) -> list[Contact]:
        return [c for c in self.contacts.values() if c.folder_id == folder_id]

    def update_contact(self, contact: Contact, changes: dict[str, Any]) -> Contact:
        changes = dict(changes)
        contact.extended.update(changes.pop(EXTENDED, {}))
        contact.fields.update(changes)
        contact.version += 1
        contact.modified = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return contact


class GraphState:
    """Every mailbox and the counters, behind one lock (handlers hold it briefly)."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.RLock()
        self._rng = random.Random(seed)
        self._mailboxes: dict[str, Mailbox] = {}  # upn (casefolded) and id -> mailbox
        self._counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()

    def count(self, name: str, by: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += by

    def observe_max(self, name: str, value: int) -> None:
        with self._counter_lock:
            self._counters[name] = max(self._counters[name], value)

    def counters(self) -> Counter[str]:
        with self._counter_lock:
            return Counter(self._counters)

    def reset_counters(self) -> None:
        with self._counter_lock:
            self._counters.clear()

    def add_mailbox(self, upn: str) -> Mailbox:
        with self.lock:
            if upn.casefold() in self._mailboxes:
                raise ValueError(f"mailbox {upn} exists")
            guid = uuid.UUID(int=self._rng.getrandbits(128), version=4)
            mailbox = Mailbox(upn=upn, id=str(guid), key=guid.bytes)
            mailbox.create_well_known()
            self._mailboxes[upn.casefold()] = mailbox
            self._mailboxes[mailbox.id] = mailbox
            return mailbox

    def mailbox(self, ref: str) -> Mailbox:
        with self.lock:
            mailbox = self._mailboxes.get(ref.casefold())
        if mailbox is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{ref}' is invalid.")
        return mailbox

    def mailboxes(self) -> list[Mailbox]:
        with self.lock:
            return list({id(m): m for m in self._mailboxes.values()}.values())
