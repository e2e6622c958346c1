"""`pdsync config check` for Outlook: every folder a binding names is in its mailbox.

A misspelt folder in `mail_folders` or `retention_days` is otherwise found only when a
rule runs (and then fails alone, see mail.py). Here each named folder is looked up in the
service mailbox as the connector looks it up at run time (well-known name, else one
folder with that display name anywhere in the tree), and each that names no one folder
becomes a line naming the key, as `config check` prints its other problems. A mailbox
that cannot be reached (Graph down, credentials refused) is not checked; that is said,
and is no configuration error of the folders.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from connectors.base import ConnectorError, RetryPolicy
from connectors.outlook.connector import OutlookConnector
from connectors.outlook.folders import FolderNameError
from connectors.outlook.settings import OutlookBinding, OutlookSettings

# A check is a person waiting at a terminal: a few quick retries, not the daemon's minutes.
CHECK_RETRIES = RetryPolicy(attempts=2, max_delay=15.0, base_wait=0.5, max_wait=2.0)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_WHY = {
    "missing": "mail folder {name!r} is not in the mailbox (no folder, nor well-known folder,"
    " by that name)",
    "several": "mail folder {name!r} names several folders in the mailbox; rename one of them",
    "shared": "mail folder {name!r} is the folder another retention rule names already",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class FolderCheck:
    """`problems`: one line per folder that is not in its mailbox ("KEY: why").
    `unchecked`: one line per binding whose mailbox could not be asked ("KEY: why")."""

    problems: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


async def check_mail_folders(
    settings: OutlookSettings,
    bindings: Iterable[tuple[str, OutlookBinding]],
    *,
    connector: OutlookConnector | None = None,
) -> FolderCheck:
    """Look up every folder each binding names in its mailbox.

    `bindings` are (key, binding) pairs, the key being where the binding is in the
    configuration ("customers[2].outlook"); problems name the folder's own key under
    it (`customers[2].outlook.retention_days."Kunde A"`, `...mail_folders[0]`).
    """
    result = FolderCheck()
    own = connector is None
    graph = connector or OutlookConnector(settings, retry_policy=CHECK_RETRIES)
    try:
        for key, binding in bindings:
            named = [(f"{key}.mail_folders[{i}]", n) for i, n in enumerate(binding.mail_folders)]
            rules = [(f"{key}.retention_days.{_toml_key(n)}", n) for n in binding.retention_days]
            if not named and not rules:
                continue
            try:
                found = await graph.mail.folders.resolve(
                    binding, [name for _, name in [*named, *rules]]
                )
            except ConnectorError as exc:
                result.unchecked.append(f"{key}: folders not checked ({exc})")
                continue
            ruled: dict[str, str] = {}  # folder id -> the rule's name, as mail.py applies them
            for folder_key, name in [*named, *rules]:
                folder = found[name]
                if isinstance(folder, FolderNameError):
                    result.problems.append(f"{folder_key}: {_WHY[folder.reason].format(name=name)}")
                elif (folder_key, name) in rules and ruled.setdefault(folder, name) != name:
                    result.problems.append(f"{folder_key}: {_WHY['shared'].format(name=name)}")
    finally:
        if own:
            await graph.aclose()
    return result


def _toml_key(name: str) -> str:
    """A key as it is written in TOML: bare where it may be, quoted otherwise."""
    if _BARE_KEY.match(name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
