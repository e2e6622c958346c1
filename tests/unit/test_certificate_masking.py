"""Masking: a certificate shows the first letter and the last two digits, never more."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.certificate.masking import (
    MASKED_EMAIL,
    MASKED_NAME,
    MASKED_PHONE,
    mask_email,
    mask_name,
    mask_phone,
)

NORWEGIAN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzæøåÆØÅ -'.", min_size=0, max_size=40)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("ola.nordmann@fjordbakeriet.no", "o***@f***.no"),
        ("Kari.Hansen@Post.Example.COM", "k***@p***.com"),
        ("x@localhost", "x***@l***"),
        ("ola@kari.nordmann", "o***@k***"),
        ("not an address", "***"),
        ("@firma.no", "***"),
    ],
)
def test_email_examples(value: str, masked: str) -> None:
    assert mask_email(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+47 912 34 555", "+47 ** ** ** 55"),
        ("91234555", "+47 ** ** ** 55"),
        ("0047 22 33 44 55", "+47 ** ** ** 55"),
        ("+46 70 123 45 67", "+46 ** ** ** 67"),
        # An extension is another line than the switchboard: said, never which.
        ("22334455 x12", "+47 ** ** ** 55 x**"),
        ("+4722334455;ext=12", "+47 ** ** ** 55 x**"),
        ("ring meg", "***"),
        ("112", "***"),
    ],
)
def test_phone_examples(value: str, masked: str) -> None:
    assert mask_phone(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("Åse Bjørg Ødegård", "Å*** B*** Ø***"),
        ("A\u030ase", "Å***"),  # Å typed as A + combining ring is still one letter
        ("  ", "***"),
        ("Anne-Lise", "A***"),
    ],
)
def test_name_examples(value: str, masked: str) -> None:
    assert mask_name(value) == masked


@given(st.text(max_size=40))
def test_a_masked_name_shows_only_first_letters(value: str) -> None:
    masked = mask_name(value)
    assert MASKED_NAME.fullmatch(masked)
    shown = [token[0] for token in masked.split()] if masked != "***" else []
    parts = unicodedata.normalize("NFC", value).split()
    assert shown == [p[0] for p in parts if p[0] != "*"][: len(shown)]
    assert len(shown) <= len(parts)


@given(NORWEGIAN)
def test_norwegian_names_keep_their_first_letters(value: str) -> None:
    masked = mask_name(value)
    assert masked.replace("*", "").replace(" ", "") == "".join(p[0] for p in value.split())


@given(st.text(alphabet="0123456789 +-()", max_size=24) | st.text(max_size=24))
def test_a_masked_phone_shows_only_the_last_two_digits(value: str) -> None:
    masked = mask_phone(value)
    assert MASKED_PHONE.fullmatch(masked)
    if masked == "***":
        return
    shown = masked.split(" ", 1)[1] if masked.startswith("+") else masked
    digits = [ch for ch in shown if ch.isdigit()]
    assert len(digits) == 2
    all_digits = "".join(ch for ch in value if ch.isdigit() and ch.isascii())
    assert all_digits.endswith("".join(digits))


@given(st.emails() | st.text(max_size=40))
def test_a_masked_email_shows_only_first_letters_and_the_tld(value: str) -> None:
    masked = mask_email(value)
    assert MASKED_EMAIL.fullmatch(masked)
    if masked == "***":
        return
    local, domain = value.strip().casefold().rsplit("@", 1)
    shown_local, shown_domain = masked.split("@")
    assert shown_local == unicodedata.normalize("NFC", local)[:1] + "***"
    assert shown_domain[0] == domain.lstrip(".")[0]
    tld = shown_domain[4:]
    assert tld == "" or domain.endswith(tld)
    assert len(tld) <= len(domain.rsplit(".", 1)[-1]) + 1
