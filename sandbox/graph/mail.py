"""Graph's mail endpoints under /users/{user}: folders, messages, delta, deletes, moves."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

from sandbox.graph.delta import Seen
from sandbox.graph.errors import bad_request
from sandbox.graph.kql import compile_search
from sandbox.graph.listing import context_url, delta_page, page_rendered, paged
from sandbox.graph.odata import body_type, option, project, selection
from sandbox.graph.render import MESSAGE_PROPERTIES, mail_folder_json, message_json
from sandbox.graph.service import Ctx, Route, route
from sandbox.graph.store import Folder, Message
from sandbox.zisson.store import Response

FOLDER_PROPERTIES = (
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "sizeInBytes",
    "isHidden",
)
USER = "/users/{user}"


def _render(ctx: Ctx, message: Message) -> dict[str, Any]:
    return message_json(
        ctx.mailbox, message, immutable=ctx.immutable, body_type=body_type(ctx.prefer)
    )


def _note_body_type(ctx: Ctx) -> None:
    if body_type(ctx.prefer) == "text":
        ctx.applied.append('outlook.body-content-type="text"')


def _folder(ctx: Ctx) -> Folder:
    return ctx.mailbox.folder(ctx.params["folder"])


# -- users and folders ----------------------------------------------------------------------


def get_user(ctx: Ctx) -> Response:
    mailbox = ctx.mailbox
    return ctx.json(
        200,
        {
            "@odata.context": f"{ctx.base}/$metadata#users/$entity",
            "id": mailbox.id,
            "userPrincipalName": mailbox.upn,
            "mail": mailbox.upn,
            "displayName": mailbox.upn.split("@")[0],
        },
    )


def list_folders(ctx: Ctx) -> Response:
    with ctx.state.lock:
        mailbox = ctx.mailbox
        parent = _folder(ctx) if "folder" in ctx.params else mailbox.folder("msgfolderroot")
        # One pass over the mailbox for every folder's counts, not one per folder.
        messages: dict[str, list[Message]] = {}
        for message in mailbox.messages.values():
            messages.setdefault(message.folder_id, []).append(message)
        children: Counter[str | None] = Counter(
            f.parent_id for f in mailbox.folders.values() if f.visible
        )
        documents = [
            mail_folder_json(mailbox, f, messages.get(f.id, []), children[f.id])
            for f in mailbox.child_folders(parent.id)
        ]
    return paged(ctx, documents, properties=FOLDER_PROPERTIES, entity="mailFolder")


def get_folder(ctx: Ctx) -> Response:
    with ctx.state.lock:
        document = mail_folder_json(ctx.mailbox, _folder(ctx))
    return ctx.json(200, {"@odata.context": context_url(ctx), **document})


def create_folder(ctx: Ctx) -> Response:
    body = ctx.call.body
    if not isinstance(body, dict) or not isinstance(body.get("displayName"), str):
        raise bad_request("The request needs a displayName.", "ErrorInvalidRequest")
    with ctx.state.lock:
        parent = ctx.params.get("folder", "msgfolderroot")
        folder = ctx.mailbox.add_folder(body["displayName"], parent)
        document = mail_folder_json(ctx.mailbox, folder)
    return ctx.json(201, {"@odata.context": context_url(ctx), **document})


# -- messages -------------------------------------------------------------------------------


def list_messages(ctx: Ctx) -> Response:
    query = ctx.call.query
    search = option(query, "$search")
    _note_body_type(ctx)
    if search is None and option(query, "$filter") is None and option(query, "$orderby") is None:
        # Graph's default order, newest first; only the page asked for is rendered.
        chosen = selection(query, MESSAGE_PROPERTIES, "message")
        with ctx.state.lock:
            scope = _scope(ctx)
            scope.sort(key=lambda m: m.received, reverse=True)
            return page_rendered(ctx, scope, len(scope), functools.partial(_render, ctx), chosen)
    if search is None:
        with ctx.state.lock:
            documents = [_render(ctx, m) for m in _scope(ctx)]
        return paged(
            ctx,
            documents,
            properties=MESSAGE_PROPERTIES,
            entity="message",
            default_order=[("receivedDateTime", True)],
        )
    if option(query, "$filter") is not None:
        raise bad_request(
            "The query parameter '$filter' is not supported with '$search'.", "SearchWithFilter"
        )
    if option(query, "$orderby") is not None:
        raise bad_request(
            "The query parameter '$orderBy' is not supported with '$search'.", "SearchWithOrderBy"
        )
    chosen = selection(query, MESSAGE_PROPERTIES, "message")
    matches = compile_search(search)
    with ctx.state.lock:
        hits = [m for m in _scope(ctx) if matches(m)]
        hits.sort(key=lambda m: m.received, reverse=True)
        hits = hits[: ctx.search_cap]
        return page_rendered(ctx, hits, len(hits), functools.partial(_render, ctx), chosen)


def _scope(ctx: Ctx) -> list[Message]:
    """The messages a list call reaches: one folder's, or every visible folder's."""
    if "folder" in ctx.params:
        return ctx.mailbox.messages_in(_folder(ctx).id)
    return ctx.mailbox.graph_messages()


def _message(ctx: Ctx) -> Message:
    return ctx.mailbox.message(ctx.params["message"])


def get_message(ctx: Ctx) -> Response:
    chosen = selection(ctx.call.query, MESSAGE_PROPERTIES, "message")
    _note_body_type(ctx)
    with ctx.state.lock:
        document = _render(ctx, _message(ctx))
    return ctx.json(200, {"@odata.context": context_url(ctx), **project(document, chosen)})


def delete_message(ctx: Ctx) -> Response:
    with ctx.state.lock:
        ctx.mailbox.delete(_message(ctx))
    ctx.state.count("deletes")
    return Response(204)


def purge_message(ctx: Ctx) -> Response:
    with ctx.state.lock:
        ctx.mailbox.purge(_message(ctx))
    ctx.state.count("permanent_deletes")
    return Response(204)


def move_message(ctx: Ctx) -> Response:
    body = ctx.call.body
    if not isinstance(body, dict) or not isinstance(body.get("destinationId"), str):
        raise bad_request("The request needs a destinationId.", "ErrorInvalidRequest")
    with ctx.state.lock:
        message = _message(ctx)
        destination = ctx.mailbox.folder(body["destinationId"])
        ctx.mailbox.move(message, destination.id)
        document = _render(ctx, message)
    ctx.state.count("moves")
    return ctx.json(201, {"@odata.context": context_url(ctx), **document})


def message_delta(ctx: Ctx) -> Response:
    _note_body_type(ctx)
    with ctx.state.lock:
        folder = _folder(ctx)
        current = {
            m.immutable_id: Seen(m.version, m.immutable_id, m.regular_id)
            for m in ctx.mailbox.messages_in(folder.id)
        }

        def render(key: str) -> dict[str, Any] | None:
            message = ctx.mailbox.messages.get(key)
            if message is None or message.folder_id != folder.id:
                return None
            return _render(ctx, message)

        return delta_page(
            ctx,
            kind="messages",
            folder_id=folder.id,
            current=current,
            properties=MESSAGE_PROPERTIES,
            render=render,
        )


def mail_routes(*, permanent_delete: bool = True) -> list[Route]:
    """`permanent_delete=False`: as in the national clouds, where Graph has no message
    permanentDelete ("global service only",
    https://learn.microsoft.com/en-us/graph/api/message-permanentdelete) and answers
    400 for the unknown segment, as for any."""
    folders = USER + "/mailFolders"
    folder = folders + "/{folder}"
    messages = USER + "/messages"
    in_folder = folder + "/messages"
    routes = [route("GET", USER, get_user, outlook=False)]
    routes += [
        route("GET", folders, list_folders),
        route("POST", folders, create_folder),
        route("GET", folder, get_folder),
        route("GET", folder + "/childFolders", list_folders),
        route("POST", folder + "/childFolders", create_folder),
        # delta before {message}, or "delta" would be taken for a message id. `delta()`
        # is the function's full form, which Microsoft's SDKs send
        # (https://learn.microsoft.com/en-us/graph/delta-query-overview: "/delta is a
        # shortcut for the fully qualified name").
        route("GET", in_folder + "/delta", message_delta),
        route("GET", in_folder + "/delta()", message_delta),
        route("GET", in_folder + "/microsoft.graph.delta()", message_delta),
        route("GET", in_folder, list_messages),
        route("GET", messages, list_messages),
    ]
    for base in (messages, in_folder):
        routes += [
            route("GET", base + "/{message}", get_message),
            route("DELETE", base + "/{message}", delete_message),
            route("POST", base + "/{message}/move", move_message),
        ]
        if permanent_delete:
            routes.append(route("POST", base + "/{message}/permanentDelete", purge_message))
    return routes
