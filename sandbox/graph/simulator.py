"""`GraphSimulator`: Entra ID and Microsoft Graph (mail, contacts) on loopback over TLS."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from sandbox.graph import tls
from sandbox.graph.admin import admin_handler
from sandbox.graph.contacts import contact_routes, validate_contact
from sandbox.graph.delta import DeltaTracker
from sandbox.graph.entra import Entra
from sandbox.graph.mail import mail_routes
from sandbox.graph.render import contact_json, message_json
from sandbox.graph.server import GraphHttpServer
from sandbox.graph.service import GraphService
from sandbox.graph.store import Address, GraphState
from sandbox.graph.throttle import Throttle
from sandbox.httpserver import ServedSimulator, TrackingHTTPServer
from sandbox.zisson.faults import FaultPlan, Faults


class GraphSimulator(ServedSimulator):
    """Entra ID's token endpoint and Graph v1.0 mail and contacts, over HTTPS on loopback.

    Use as a context manager or with start()/stop(). The in-process methods act "by
    hand" on the same mailboxes the HTTP API serves; they take the same lock, never
    count as requests, and are never throttled or faulted. They raise `GraphError`
    (404 unknown mailbox/folder/item, 409 duplicate folder, 400 bad contact) as the
    HTTP side would.

    `contact_permanent_delete=False` plays a cloud where Graph has no permanentDelete
    for contacts (400, as for any unknown segment); `national_cloud=True` one with
    neither message nor contact permanentDelete, as the docs say of US Gov L4/L5 and
    21Vianet (https://learn.microsoft.com/en-us/graph/api/message-permanentdelete,
    https://learn.microsoft.com/en-us/graph/api/contact-permanentdelete: "global
    service" only).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tenant_id: str = "pdsync-sandbox-tenant",
        seed: int = 0,
        max_concurrency: int = 4,
        request_budget: int = 10_000,
        budget_window_seconds: float = 600.0,
        time_scale: float = 1.0,
        token_ttl_seconds: float = 3600,
        search_cap: int = 1000,
        contact_permanent_delete: bool = True,
        national_cloud: bool = False,
    ) -> None:
        super().__init__((host, port))
        self.scheme = "https"  # the certificate is valid for 127.0.0.1 and localhost
        self.thread_name = "graph-sim"
        self._state = GraphState(seed)
        self._entra = Entra(tenant_id, token_ttl_seconds)
        self._faults = FaultPlan(seed)
        self._delta = DeltaTracker()
        self._throttle = Throttle(
            self._state,
            max_concurrency=max_concurrency,
            request_budget=request_budget,
            budget_window_seconds=budget_window_seconds,
            time_scale=time_scale,
        )
        self._service = GraphService(
            self._state,
            self._throttle,
            self._faults,
            self._delta,
            mail_routes(permanent_delete=not national_cloud)
            + contact_routes(permanent_delete=contact_permanent_delete and not national_cloud),
            seed=seed,
            search_cap=search_cap,
        )
        self._tls = tls.generate(host)
        self._dir: Path | None = None
        self._ca_file: Path | None = None
        self._write_tls()

    def _write_tls(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="graph-sim-"))
        # A simulator that is never stopped still leaves no key material behind.
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._ca_file, self._cert_file, self._key_file = self._tls.write(self._dir)

    # -- lifecycle (ServedSimulator: start, stop, with, url) ------------------------------

    def _before_start(self) -> None:
        if self._dir is None:
            self._write_tls()  # started again after stop()

    def _make_server(self) -> TrackingHTTPServer:
        return GraphHttpServer(
            self._address,
            context=tls.server_context(self._cert_file, self._key_file),
            entra=self._entra,
            service=self._service,
            admin=admin_handler(self),
        )

    def _after_start(self) -> None:
        self._entra.base_url = self.url
        self._service.base = self.graph_url

    def _after_stop(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the server certificate; trust this, nothing else."""
        if self._ca_file is None or self._dir is None:
            raise RuntimeError("simulator stopped")
        return self._ca_file

    @property
    def tenant_id(self) -> str:
        return self._entra.tenant_id

    @property
    def authority(self) -> str:
        """What msal takes as `authority` (with instance_discovery=False)."""
        return f"{self.url}/{self.tenant_id}"

    @property
    def graph_url(self) -> str:
        return f"{self.url}/v1.0"

    # -- apps and mailboxes ---------------------------------------------------------------

    def add_app(
        self, client_id: str, *, secret: str | None = None, certificate_pem: bytes | None = None
    ) -> None:
        """Register (or re-register) an app with a client secret and/or a public certificate."""
        self._entra.add_app(client_id, secret=secret, certificate_pem=certificate_pem)

    def add_mailbox(self, upn: str) -> None:
        """A mailbox with the well-known folders (inbox, sentitems, drafts, deleteditems,
        archive, junkemail, outbox, msgfolderroot) and Recoverable Items."""
        self._state.add_mailbox(upn)

    def add_folder(self, upn: str, display_name: str, *, parent: str = "msgfolderroot") -> str:
        with self._state.lock:
            return self._state.mailbox(upn).add_folder(display_name, parent).id

    def folder_id(self, upn: str, display_name: str, *, parent: str = "msgfolderroot") -> str:
        """The id of the child folder of `parent` named `display_name` (as Graph compares
        names: case-insensitively); KeyError when there is none."""
        with self._state.lock:
            mailbox = self._state.mailbox(upn)
            for folder in mailbox.child_folders(mailbox.folder(parent).id):
                if folder.display_name.casefold() == display_name.casefold():
                    return folder.id
        raise KeyError(display_name)

    def add_message(
        self,
        upn: str,
        folder: str,
        *,
        subject: str = "",
        body: str = "",
        sender: str,
        to: Iterable[str] = (),
        cc: Iterable[str] = (),
        received: dt.datetime | None = None,
        sender_name: str = "",
        to_names: Iterable[str] = (),
    ) -> str:
        """Deliver a message to a folder (well-known name or id); returns its ImmutableId.

        `body` is plain text (Graph shows it as HTML unless asked for text). A naive
        `received` is taken as UTC; the default is now.
        """
        moment = received or dt.datetime.now(dt.UTC)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        recipients, names = list(to), list(to_names)
        names += [""] * (len(recipients) - len(names))
        with self._state.lock:
            message = self._state.mailbox(upn).add_message(
                folder,
                subject=subject,
                body=body,
                sender=Address(sender_name, sender),
                to=[Address(n, a) for a, n in zip(recipients, names, strict=False)],
                cc=[Address("", a) for a in cc],
                received=moment.replace(microsecond=0),
            )
            return message.immutable_id

    def messages(self, upn: str, folder: str | None = None) -> list[dict[str, Any]]:
        """Every message that exists (Recoverable Items/Deletions included, Purges not), or
        those in one folder, Graph-shaped with ImmutableIds and a text body, newest first."""
        with self._state.lock:
            mailbox = self._state.mailbox(upn)
            found = (
                mailbox.messages_in(mailbox.folder(folder, graph=False).id)
                if folder is not None
                else list(mailbox.messages.values())
            )
            found.sort(key=lambda m: m.received, reverse=True)
            return [message_json(mailbox, m, immutable=True, body_type="text") for m in found]

    def purged(self, upn: str) -> list[dict[str, Any]]:
        """What permanentDelete (or a delete from Deletions) moved to Recoverable Items/Purges."""
        with self._state.lock:
            mailbox = self._state.mailbox(upn)
            return [
                message_json(mailbox, m, immutable=True, body_type="text") for m in mailbox.purged
            ]

    def add_contact_folder(self, upn: str, display_name: str) -> str:
        with self._state.lock:
            return self._state.mailbox(upn).add_contact_folder(display_name).id

    def add_contact(self, upn: str, folder_id: str, contact: Mapping[str, Any]) -> str:
        """Create a contact from Graph contact JSON; returns its id."""
        fields = validate_contact(contact, partial=False)
        with self._state.lock:
            return self._state.mailbox(upn).add_contact(folder_id, fields).id

    def contacts(self, upn: str, folder_id: str) -> list[dict[str, Any]]:
        with self._state.lock:
            mailbox = self._state.mailbox(upn)
            mailbox.contact_folder(folder_id)
            return [contact_json(mailbox, c) for c in mailbox.contacts_in(folder_id)]

    def contact_properties(self, upn: str, contact_id: str) -> dict[str, str]:
        """A contact's single-value extended properties, id -> value (what no Outlook
        client shows)."""
        with self._state.lock:
            return dict(self._state.mailbox(upn).contact(contact_id).extended)

    def patch_contact(self, upn: str, contact_id: str, changes: Mapping[str, Any]) -> None:
        """Edit a contact as a user would in Outlook: new change key, shows up in delta."""
        fields = validate_contact(changes, partial=True)
        with self._state.lock:
            mailbox = self._state.mailbox(upn)
            mailbox.update_contact(mailbox.contact(contact_id), fields)

    def delete_contact(self, upn: str, contact_id: str) -> None:
        with self._state.lock:
            mailbox = self._state.mailbox(upn)
            del mailbox.contacts[mailbox.contact(contact_id).id]

    # -- tokens, time, faults, counters ---------------------------------------------------

    def expire_delta_tokens(
        self, status: Literal[400, 404, 410] = 410, *, after_pages: int = 0
    ) -> None:
        """Every delta and skip token issued so far now fails: 410 resyncRequired with a
        Location header (the initial query), 404 syncStateNotFound or 400
        syncStateInvalid (see sandbox.graph.delta). With `after_pages`, that happens
        once so many more delta pages were served (a round expiring midway)."""
        self._delta.expire_all(status, after_pages=after_pages)

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far now answers 401 InvalidAuthenticationToken."""
        self._entra.revoke_tokens()

    def set_time_scale(self, scale: float) -> None:
        """Budget windows (and every Retry-After) pass `scale` times faster."""
        self._throttle.time_scale = scale

    def set_faults(
        self,
        error_rate: float = 0.0,
        latency_ms: float = 0,
        rate_429: float = 0.0,
        retry_after: float = 1,
        drop_rate: float = 0.0,
        seed: int | None = None,
    ) -> Faults:
        """Faults on Graph calls (never on /_sim/, discovery or the token endpoint).

        latency_ms is service time: it is spent holding the mailbox's concurrency slot.
        A dropped write is done first and then loses its answer. Inside a $batch, each
        item may get a 429 or 5xx of its own, and a "drop" becomes a 504 for that item
        (after the work, for a write).
        """
        return self._faults.set(
            seed,
            error_rate=error_rate,
            latency_ms=latency_ms,
            rate_429=rate_429,
            retry_after=retry_after,
            drop_rate=drop_rate,
        )

    def fail_next(
        self, count: int = 1, *, status: int | Literal["drop"] = 429, retry_after: float = 1
    ) -> None:
        """Script the next `count` Graph calls (batch items included) to fail this way."""
        self._faults.fail_next(count, status=status, retry_after=retry_after)

    @property
    def counters(self) -> Counter[str]:
        """A consistent snapshot; missing keys read as 0.

        "requests" (HTTP requests outside /_sim/, token and $batch POSTs included; batch
        items are "batch_items"), "429", "throttled_budget", "throttled_concurrency",
        "concurrency_violations", "max_in_flight" (the most in flight at once for one app
        and mailbox), "batches", "batch_items", "permanent_deletes", "deletes", "moves",
        "contact_creates", "contact_updates", "contact_permanent_deletes", "tokens",
        "auth_failures", "5xx", "drops", "tls_failures", and one per endpoint
        ("GET /users/{user}/messages", "POST token").
        """
        return self._state.counters()

    def reset_counters(self) -> None:
        self._state.reset_counters()
        self._throttle.reset()

    def occupancy(self) -> dict[tuple[str, str], dict[int, float]]:
        """Per (app id, mailbox id): seconds with 0, 1, 2, ... requests in flight since the
        mailbox's first request after `reset_counters` (Throttle.occupancy)."""
        return self._throttle.occupancy()

    def timeline(self) -> list[tuple[tuple[str, str], float, float]]:
        """Per admitted request: ((app id, mailbox id), admitted, answered), monotonic
        seconds, since `reset_counters` (Throttle.timeline)."""
        return self._throttle.timeline()

    def state(self) -> dict[str, Any]:
        """Everything /_sim/state shows."""
        mailboxes = {}
        with self._state.lock:
            for mailbox in self._state.mailboxes():
                by_folder = Counter(
                    mailbox.folders[m.folder_id].well_known or m.folder_id
                    for m in mailbox.messages.values()
                )
                mailboxes[mailbox.upn] = {
                    "id": mailbox.id,
                    "messages": dict(by_folder),
                    "purged": len(mailbox.purged),
                    "contact_folders": {
                        f.id: f.display_name for f in mailbox.contact_folders.values()
                    },
                    "contacts": len(mailbox.contacts),
                }
        return {
            **self._entra.snapshot(),
            "mailboxes": mailboxes,
            "throttle": self._throttle.describe(),
            "faults": self._faults.describe(),
            "delta_tokens": self._delta.outstanding(),
            "counters": dict(self.counters),
        }
