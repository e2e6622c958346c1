"""No e-mail address, phone number or name leaves in a log line."""

from __future__ import annotations

import io
import json
import logging

import structlog

from daemon import logs


def capture(**kwargs: object) -> dict[str, object]:
    stream = io.StringIO()
    logs.configure(format="json", level="debug", stream=stream)
    structlog.get_logger("t").info("event", **kwargs)
    return json.loads(stream.getvalue().strip().splitlines()[-1])


def test_emails_and_phone_numbers_are_redacted_anywhere_in_a_line() -> None:
    line = capture(
        detail={"note": "ring Åse på 22 33 44 55 eller +47 912 34 567", "to": ["ola@fjord.no"]},
        error="HTTP 404 for /users/kari.nordmann@fjord.no/messages",
    )
    text = json.dumps(line, ensure_ascii=False)
    for secret in ("22 33 44 55", "912 34 567", "ola@fjord.no", "kari.nordmann@fjord.no"):
        assert secret not in text
    assert "[phone]" in text and "[email]" in text


def test_values_of_personal_keys_are_removed_but_ids_and_counts_stay() -> None:
    line = capture(
        given_name="Åse",
        display_name="Åse Bjørnstad",
        title="Daglig leder",
        run_id="3f2a4b5c12345678",
        count=12,
        link="0e5f9a52-1234-5678-9abc-def012345678",
    )
    assert line["given_name"] == line["display_name"] == line["title"] == "[redacted]"
    assert line["run_id"] == "3f2a4b5c12345678" and line["count"] == 12
    assert line["link"] == "0e5f9a52-1234-5678-9abc-def012345678"


def test_exceptions_and_standard_library_logging_are_redacted_too() -> None:
    stream = io.StringIO()
    logs.configure(format="json", level="info", stream=stream)
    try:
        raise ValueError("bad phone 41234567 for per@fjord.no")
    except ValueError:
        structlog.get_logger("t").exception("failed")
    logging.getLogger("some.library").warning("contact per@fjord.no at 41234567")
    text = stream.getvalue()
    assert "41234567" not in text and "per@fjord.no" not in text
    assert text.count("[email]") >= 2


def test_ids_timestamps_and_hashes_are_not_mistaken_for_phone_numbers() -> None:
    for text in (
        "run 3f2a4b5c12345678",
        "2026-11-29T04:07:57Z",
        "op 12345678-aaaa",
        "took 1234.5 ms",
    ):
        assert logs.redact_text(text) == text
