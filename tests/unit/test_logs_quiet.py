"""What a person running a command sees of the logs: no library chatter, no colour codes
in JSON, nothing below a warning from a command whose own output says what happened, and
log lines that go above a progress bar rather than through it."""

from __future__ import annotations

import io
import json
import logging
import secrets
from pathlib import Path

import structlog
from rich.console import Console
from rich.progress import Progress

from daemon import logs
from daemon.store import Store


def test_opening_the_store_logs_nothing_at_the_default_level(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(format="json", level="info", stream=stream)
    store = Store.open(f"sqlite:///{tmp_path / 'pdsync.db'}", master_key=secrets.token_bytes(32))
    store.close()
    assert stream.getvalue() == ""  # Alembic's "Context impl ..." / "Running upgrade ..."


def test_uvicorn_colour_codes_stay_out_of_the_json_log() -> None:
    stream = io.StringIO()
    logs.configure(format="json", level="debug", stream=stream)
    # uvicorn logs each message twice over: plain, and coloured as `extra`.
    logging.getLogger("uvicorn.error").warning(
        "Started server process [%d]", 42, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )
    line = json.loads(stream.getvalue())
    assert line["event"] == "Started server process [42]"
    assert "color_message" not in line and "\x1b" not in stream.getvalue()


def test_a_command_logs_from_warning_up_and_the_daemon_from_info() -> None:
    for command, shown in ((True, ["careful"]), (False, ["progress", "careful", "progress too"])):
        stream = io.StringIO()
        logs.configure(format="json", level="info", stream=stream, command=command)
        structlog.get_logger("pdsync.sync").info("progress", records=3)
        structlog.get_logger("pdsync.sync").warning("careful")
        logging.getLogger("pdsync.other").info("progress too")
        events = [json.loads(x)["event"] for x in stream.getvalue().splitlines()]
        assert events == shown
    stream = io.StringIO()
    logs.configure(format="json", level="debug", stream=stream, command=True)  # -v
    structlog.get_logger("pdsync.sync").info("progress")
    assert "progress" in stream.getvalue()


def test_a_line_logged_under_a_live_progress_bar_is_printed_above_it() -> None:
    logs.configure(format="console", level="info")  # the default stream: stderr as it is then
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80)
    with Progress(console=console) as progress:
        task = progress.add_task("erasing in outlook", total=2)
        structlog.get_logger("pdsync.erasure").warning("item_retried", items=1)
        progress.update(task, completed=2)
    # rich printed the line itself, on the bar's console, instead of it being written
    # across the bar on the real stderr.
    assert "item_retried" in screen.getvalue()
