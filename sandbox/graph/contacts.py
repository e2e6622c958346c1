"""Graph's contact endpoints: contact folders, contacts (with change keys), delta."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sandbox.graph.delta import Seen
from sandbox.graph.errors import GraphError, bad_request
from sandbox.graph.listing import context_url, delta_page, paged
from sandbox.graph.odata import option, project, selection
from sandbox.graph.odata_filter import compile_filter
from sandbox.graph.render import CONTACT_FIELDS, CONTACT_PROPERTIES, contact_json, extended_json
from sandbox.graph.service import Ctx, Route, route
from sandbox.graph.store import EXTENDED, Contact, Folder, Mailbox
from sandbox.zisson.store import Response

READ_ONLY = frozenset(
    {"id", "changeKey", "createdDateTime", "lastModifiedDateTime", "parentFolderId"}
)
_STRING_LISTS = ("businessPhones", "homePhones", "imAddresses", "categories", "children")
USER = "/users/{user}"


# A single-value extended property's id: "{type} {guid} Name {name}", "{type} {guid} Id
# {0x...}" or "{type} {proptag}"
# (https://learn.microsoft.com/en-us/graph/api/resources/extended-properties-overview).
_PROPERTY_ID = re.compile(
    r"(String|Integer|Boolean|SystemTime|Binary|Double|Float|Long|Short|CLSID|Currency"
    r"|ApplicationTime|Object)\s+(\{[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}"
    r"\s+(Name\s+\S.*|Id\s+0x[0-9A-Fa-f]+)|0x[0-9A-Fa-f]{1,8})"
)
_EXPAND = re.compile(rf"{EXTENDED}\(\$filter=(?P<filter>.+)\)", re.IGNORECASE)


def validate_extended(value: Any) -> dict[str, str]:
    """`singleValueExtendedProperties` of a create or update body: [{id, value}], as
    https://learn.microsoft.com/en-us/graph/api/singlevaluelegacyextendedproperty-post-singlevalueextendedproperties
    shows it; id -> value."""
    if not isinstance(value, list):
        raise bad_request(f"'{EXTENDED}' must be a list of {{id, value}}.", "RequestBodyRead")
    properties: dict[str, str] = {}
    for item in value:
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("value"), str)
        ):
            raise bad_request(f"'{EXTENDED}' must be a list of {{id, value}}.", "RequestBodyRead")
        if not _PROPERTY_ID.fullmatch(item["id"].strip()):
            raise bad_request(
                f"The extended property id '{item['id']}' is not valid.", "ErrorInvalidProperty"
            )
        properties[item["id"].strip()] = item["value"]
    return properties


def expansion(ctx: Ctx) -> Callable[[Mapping[str, Any]], bool] | None:
    """Which extended properties `$expand=singleValueExtendedProperties($filter=id eq
    '…')` asks for (https://learn.microsoft.com/en-us/graph/api/singlevaluelegacyextendedproperty-get);
    None when nothing is expanded; 400 for any other $expand."""
    raw = option(ctx.call.query, "$expand")
    if raw is None:
        return None
    found = _EXPAND.fullmatch(raw.strip())
    if found is None:
        raise bad_request(
            f"Parsing OData Select and Expand failed: could not expand '{raw}'.",
            "BadRequest",
        )
    return compile_filter(found["filter"])


def shown(
    contact: Contact, document: dict[str, Any], wanted: Callable[..., bool] | None
) -> dict[str, Any]:
    """A contact as a response shows it: its extended properties only when expanded, and
    then only those the $expand filter names (Graph leaves the list out when none)."""
    properties = [p for p in extended_json(contact) if wanted is not None and wanted(p)]
    document = {k: v for k, v in document.items() if k != EXTENDED}
    if properties:
        document[EXTENDED] = properties
    return document


def validate_contact(body: Any, *, partial: bool) -> dict[str, Any]:
    """The writable fields of a contact body, as Graph would accept them; else a 400."""
    if not isinstance(body, Mapping):
        raise bad_request("The request body must be a JSON object.", "RequestBodyRead")
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata.") or name in READ_ONLY:
            continue
        if name == EXTENDED:
            fields[EXTENDED] = validate_extended(value)
            continue
        if name not in CONTACT_FIELDS:
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.contact'. Make "
                "sure to only use property names that are defined by the type or mark the type "
                "as open type.",
                "RequestBodyRead",
            )
        if name in _STRING_LISTS and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise bad_request(f"'{name}' must be a list of strings.", "RequestBodyRead")
        if name == "emailAddresses":
            if not isinstance(value, list) or not all(
                isinstance(v, Mapping) and isinstance(v.get("address", ""), str) for v in value
            ):
                raise bad_request(
                    "'emailAddresses' must be a list of {address, name} objects.", "RequestBodyRead"
                )
            value = [
                {"name": v.get("name") or v.get("address", ""), "address": v.get("address", "")}
                for v in value
            ]
        fields[name] = value
    if not partial and not fields.get("displayName"):
        # Exchange composes a display name when none is given.
        given, surname = fields.get("givenName") or "", fields.get("surname") or ""
        fields["displayName"] = f"{given} {surname}".strip()
    return fields


def _folder(ctx: Ctx) -> Folder:
    if "cfolder" in ctx.params:
        return ctx.mailbox.contact_folder(ctx.params["cfolder"])
    return ctx.mailbox.contact_folder(ctx.mailbox.default_contacts)


def _contact(ctx: Ctx) -> Contact:
    folder_id = _folder(ctx).id if "cfolder" in ctx.params else None
    return ctx.mailbox.contact(ctx.params["contact"], folder_id)


def check_if_match(mailbox: Mailbox, contact: Contact, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    current = contact_json(mailbox, contact)["@odata.etag"]
    wanted = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if current.removeprefix("W/") not in wanted:
        raise GraphError(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed "
            "in the request does not match the current change key for the item.",
        )


def list_contact_folders(ctx: Ctx) -> Response:
    with ctx.state.lock:
        documents = [
            {"id": f.id, "displayName": f.display_name, "parentFolderId": f.parent_id}
            for f in ctx.mailbox.contact_folders.values()
            if f.id != ctx.mailbox.default_contacts
        ]
    return paged(
        ctx, documents, properties=("id", "displayName", "parentFolderId"), entity="contactFolder"
    )


def get_contact_folder(ctx: Ctx) -> Response:
    with ctx.state.lock:
        folder = _folder(ctx)
    document = {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
    }
    return ctx.json(200, {"@odata.context": context_url(ctx), **document})


def create_contact_folder(ctx: Ctx) -> Response:
    body = ctx.call.body
    if not isinstance(body, Mapping) or not isinstance(body.get("displayName"), str):
        raise bad_request("The request needs a displayName.", "ErrorInvalidRequest")
    with ctx.state.lock:
        folder = ctx.mailbox.add_contact_folder(body["displayName"])
    document = {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
    }
    return ctx.json(201, {"@odata.context": context_url(ctx), **document})


def delete_contact_folder(ctx: Ctx) -> Response:
    with ctx.state.lock:
        ctx.mailbox.delete_contact_folder(_folder(ctx).id)
    ctx.state.count("deletes")
    return Response(204)


def list_contacts(ctx: Ctx) -> Response:
    if option(ctx.call.query, "$search") is not None:
        raise bad_request("$search is not supported on contacts.")
    wanted = expansion(ctx)
    with ctx.state.lock:
        contacts = {c.id: c for c in ctx.mailbox.contacts_in(_folder(ctx).id)}
        # Every property is there for $filter=singleValueExtendedProperties/Any(ep: ...)
        # (https://learn.microsoft.com/en-us/graph/api/singlevaluelegacyextendedproperty-get);
        # what is shown is decided per page by `shown`.
        documents = [
            {**contact_json(ctx.mailbox, c), EXTENDED: extended_json(c)} for c in contacts.values()
        ]
    return paged(
        ctx,
        documents,
        properties=CONTACT_PROPERTIES,
        entity="contact",
        finish=lambda d: shown(contacts[d["id"]], d, wanted),
    )


def create_contact(ctx: Ctx) -> Response:
    fields = validate_contact(ctx.call.body, partial=False)
    with ctx.state.lock:
        contact = ctx.mailbox.add_contact(_folder(ctx).id, fields)
        document = contact_json(ctx.mailbox, contact)
    ctx.state.count("contact_creates")
    return ctx.json(
        201, {"@odata.context": context_url(ctx), **document}, {"ETag": document["@odata.etag"]}
    )


def get_contact(ctx: Ctx) -> Response:
    chosen = selection(ctx.call.query, CONTACT_PROPERTIES, "contact")
    wanted = expansion(ctx)
    with ctx.state.lock:
        contact = _contact(ctx)
        document = contact_json(ctx.mailbox, contact)
        expanded = shown(contact, {}, wanted)
    return ctx.json(
        200,
        {"@odata.context": context_url(ctx), **project(document, chosen), **expanded},
        {"ETag": document["@odata.etag"]},
    )


def update_contact(ctx: Ctx) -> Response:
    changes = validate_contact(ctx.call.body, partial=True)
    with ctx.state.lock:
        contact = _contact(ctx)
        check_if_match(ctx.mailbox, contact, ctx.call.headers.get("if-match"))
        ctx.mailbox.update_contact(contact, changes)
        document = contact_json(ctx.mailbox, contact)
    ctx.state.count("contact_updates")
    return ctx.json(
        200, {"@odata.context": context_url(ctx), **document}, {"ETag": document["@odata.etag"]}
    )


def delete_contact(ctx: Ctx) -> Response:
    with ctx.state.lock:
        contact = _contact(ctx)
        check_if_match(ctx.mailbox, contact, ctx.call.headers.get("if-match"))
        del ctx.mailbox.contacts[contact.id]
    ctx.state.count("deletes")
    return Response(204)


def permanent_delete_contact(ctx: Ctx) -> Response:
    """Out of every client's reach at once (to Recoverable Items/Purges: gone here)."""
    with ctx.state.lock:
        contact = _contact(ctx)
        del ctx.mailbox.contacts[contact.id]
    ctx.state.count("contact_permanent_deletes")
    return Response(204)


def contact_delta(ctx: Ctx) -> Response:
    with ctx.state.lock:
        folder = _folder(ctx)
        current = {c.id: Seen(c.version, c.id, c.id) for c in ctx.mailbox.contacts_in(folder.id)}

        def render(key: str) -> dict[str, Any] | None:
            contact = ctx.mailbox.contacts.get(key)
            if contact is None or contact.folder_id != folder.id:
                return None
            return contact_json(ctx.mailbox, contact)

        return delta_page(
            ctx,
            kind="contacts",
            folder_id=folder.id,
            current=current,
            properties=CONTACT_PROPERTIES,
            render=render,
        )


def contact_routes(*, permanent_delete: bool = True) -> list[Route]:
    """`permanent_delete=False`: as in the national clouds, where Graph has no
    contact permanentDelete and answers 400 (no such segment)."""
    folders = USER + "/contactFolders"
    folder = folders + "/{cfolder}"
    routes = [
        route("GET", folders, list_contact_folders),
        route("POST", folders, create_contact_folder),
        route("GET", folder, get_contact_folder),
        route("DELETE", folder, delete_contact_folder),
        route("GET", folder + "/contacts/delta", contact_delta),
        # The full form Microsoft's SDKs send (see sandbox.graph.mail).
        route("GET", folder + "/contacts/delta()", contact_delta),
        route("GET", folder + "/contacts/microsoft.graph.delta()", contact_delta),
    ]
    for base in (folder + "/contacts", USER + "/contacts"):
        routes += [
            route("GET", base, list_contacts),
            route("POST", base, create_contact),
            route("GET", base + "/{contact}", get_contact),
            route("PATCH", base + "/{contact}", update_contact),
            route("DELETE", base + "/{contact}", delete_contact),
        ]
        if permanent_delete:
            purge = route("POST", base + "/{contact}/permanentDelete", permanent_delete_contact)
            routes.append(purge)
    return routes
