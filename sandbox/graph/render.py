"""Graph's JSON for messages, contacts and folders, as the wire shows them."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
from typing import Any

from sandbox.graph.store import Address, Contact, Folder, Mailbox, Message

MESSAGE_PROPERTIES = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
)
# What a contact may hold (writable), beyond id/etag/timestamps/parentFolderId.
CONTACT_FIELDS: dict[str, Any] = {
    "displayName": "",
    "givenName": "",
    "middleName": None,
    "surname": "",
    "nickName": None,
    "title": None,
    "initials": None,
    "fileAs": "",
    "jobTitle": None,
    "companyName": None,
    "department": None,
    "officeLocation": None,
    "profession": None,
    "manager": None,
    "assistantName": None,
    "birthday": None,
    "personalNotes": "",
    "emailAddresses": [],
    "imAddresses": [],
    "businessPhones": [],
    "homePhones": [],
    "mobilePhone": None,
    "businessHomePage": None,
    "homeAddress": {},
    "businessAddress": {},
    "otherAddress": {},
    "categories": [],
    "children": [],
    "spouseName": None,
    "generation": None,
    "yomiGivenName": None,
    "yomiSurname": None,
    "yomiCompanyName": None,
}
CONTACT_PROPERTIES = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "parentFolderId",
    *CONTACT_FIELDS,
)


@functools.lru_cache(maxsize=1 << 16)
def iso(moment: dt.datetime) -> str:
    # Cached: a listing renders every message of a folder (a service mailbox holds
    # hundreds of customers' mail), and formatting was most of its time.
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def change_key(version: int, salt: bytes = b"") -> str:
    # Exchange change keys are base64 with a fixed prefix; only equality matters.
    return "CQAAABYAAA" + base64.b64encode(salt[:6] + version.to_bytes(6, "big")).decode()


def etag(key: str) -> str:
    return f'W/"{key}"'


def _recipient(address: Address) -> dict[str, Any]:
    return {"emailAddress": {"name": address.name or address.address, "address": address.address}}


def html_body(text: str) -> str:
    escaped = html.escape(text).replace("\r\n", "\n").replace("\n", "<br>\r\n")
    return (
        '<html><head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n'
        f"</head><body><div>{escaped}</div></body></html>"
    )


def message_json(
    mailbox: Mailbox, message: Message, *, immutable: bool, body_type: str = "html"
) -> dict[str, Any]:
    key = change_key(message.version, mailbox.key)
    message_id = message.immutable_id if immutable else message.regular_id
    body = (
        {"contentType": "text", "content": message.body}
        if body_type == "text"
        else {"contentType": "html", "content": html_body(message.body)}
    )
    return {
        "@odata.etag": etag(key),
        "id": message_id,
        "createdDateTime": iso(message.created),
        "lastModifiedDateTime": iso(message.modified),
        "changeKey": key,
        "categories": [],
        "receivedDateTime": iso(message.received),
        "sentDateTime": iso(message.received),
        "hasAttachments": False,
        "internetMessageId": message.internet_message_id,
        "subject": message.subject,
        "bodyPreview": " ".join(message.body.split())[:255],
        "importance": "normal",
        "parentFolderId": message.folder_id,
        "conversationId": message.conversation_id,
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": False,
        "isDraft": False,
        "webLink": "https://outlook.office365.com/owa/?ItemID="
        + message_id.replace("=", "%3D")
        + "&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused",
        "body": body,
        "sender": _recipient(message.sender),
        "from": _recipient(message.sender),
        "toRecipients": [_recipient(a) for a in message.to],
        "ccRecipients": [_recipient(a) for a in message.cc],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    }


def extended_json(contact: Contact) -> list[dict[str, str]]:
    """A contact's single-value extended properties as Graph shows them on $expand."""
    return [{"id": key, "value": value} for key, value in contact.extended.items()]


def contact_json(mailbox: Mailbox, contact: Contact) -> dict[str, Any]:
    key = change_key(contact.version, mailbox.key)
    fields = {name: contact.fields.get(name, default) for name, default in CONTACT_FIELDS.items()}
    return {
        "@odata.etag": etag(key),
        "id": contact.id,
        "createdDateTime": iso(contact.created),
        "lastModifiedDateTime": iso(contact.modified),
        "changeKey": key,
        "parentFolderId": contact.folder_id,
        **fields,
    }


def mail_folder_json(
    mailbox: Mailbox,
    folder: Folder,
    messages: list[Message] | None = None,
    children: int | None = None,
) -> dict[str, Any]:
    """`messages` and `children`: the folder's, when the caller has them already (a
    listing of many folders gathers them in one pass over the mailbox)."""
    if messages is None:
        messages = mailbox.messages_in(folder.id)
    if children is None:
        children = len(mailbox.child_folders(folder.id))
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": children,
        "unreadItemCount": len(messages),
        "totalItemCount": len(messages),
        "sizeInBytes": sum(len(m.body) + len(m.subject) for m in messages),
        "isHidden": False,
    }


def contact_folder_json(folder: Folder) -> dict[str, Any]:
    return {"id": folder.id, "displayName": folder.display_name, "parentFolderId": folder.parent_id}
