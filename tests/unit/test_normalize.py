"""Normalisation never loses a digit or a letter (property tests)."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from daemon import crypto, normalize
from daemon.domain import Phone, PhoneType

NORWEGIAN = "abcdefghijklmnopqrstuvwxyzæøåABCDEFGHIJKLMNOPQRSTUVWXYZÆØÅéü -'"
SEPARATORS = st.sampled_from(["", " ", "-", ".", "  "])
eight_digits = st.from_regex(r"[2-9][0-9]{7}", fullmatch=True)


def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


@st.composite
def written_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """An 8-digit Norwegian number written the ways people write it."""
    number = draw(eight_digits)
    prefix = draw(st.sampled_from(["", "+47", "+47 ", "0047", "0047 ", "(+47) "]))
    groups = draw(st.sampled_from([(8,), (2, 2, 2, 2), (3, 2, 3), (3, 5), (4, 4)]))
    separator = draw(SEPARATORS)
    parts, at = [], 0
    for size in groups:
        parts.append(number[at : at + size])
        at += size
    return number, prefix + separator.join(parts)


@given(written_numbers())
def test_any_written_norwegian_number_normalises_to_plus_47_and_keeps_every_digit(
    case: tuple[str, str],
) -> None:
    number, written = case
    phone = normalize.phone(written, PhoneType.MOBILE)
    assert phone.e164 == "+47" + number
    assert phone.number == written.strip()  # the verbatim text is kept
    assert digits(phone.number) == digits(written)


@given(st.text(alphabet="0123456789 +-()x#*abc", max_size=25))
def test_normalising_any_text_never_drops_a_digit_from_what_is_kept(text: str) -> None:
    phone = normalize.phone(text)
    assert digits(phone.number) == digits(text)
    if phone.e164 is not None:
        assert phone.e164.startswith("+") and digits(phone.e164).endswith(digits(phone.e164)[-4:])


@given(st.text(alphabet=NORWEGIAN, min_size=1, max_size=40))
def test_names_keep_every_letter(name: str) -> None:
    kept = normalize.text(name)
    assert kept == name.strip()
    assert [ch for ch in kept if ch.isalpha()] == [ch for ch in name if ch.isalpha()]
    key = normalize.name_key(name)
    assert len([ch for ch in key if ch.isalpha()]) == len([ch for ch in name if ch.isalpha()])


@given(st.text(alphabet=NORWEGIAN, min_size=1, max_size=20))
def test_decomposed_letters_compose_without_loss(name: str) -> None:
    decomposed = unicodedata.normalize("NFD", name)
    assert normalize.text(decomposed) == normalize.text(name)


@given(written_numbers(), written_numbers())
def test_formatting_is_not_a_change_but_another_number_is(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    key = b"k" * 32
    first = [Phone(number=a[1], type=PhoneType.WORK, e164=normalize.e164(a[1]))]
    reformatted = [
        normalize.phone(" ".join(a[0][i : i + 2] for i in range(0, 8, 2)), PhoneType.WORK)
    ]
    assert crypto.fingerprint(key, "phones", first) == crypto.fingerprint(
        key, "phones", reformatted
    )
    other = [normalize.phone(b[1], PhoneType.WORK)]
    assert (
        crypto.fingerprint(key, "phones", first) == crypto.fingerprint(key, "phones", other)
    ) == (a[0] == b[0])


def test_unparseable_numbers_are_kept_verbatim_and_flagged() -> None:
    phone = normalize.phone("ring sentralbordet")
    assert phone.number == "ring sentralbordet" and phone.e164 is None
    assert normalize.phone("12").e164 is None


def _by_phonenumbers(number: str, region: str) -> str | None:
    """What Google's libphonenumber (the `phonenumbers` port) makes of a number, after
    the one rewrite e164 makes first (an extension as people write it here, "linje 12",
    "#12", into the "ext. 12" the library reads): the oracle for e164's shortcut."""
    import phonenumbers

    candidate = unicodedata.normalize("NFKC", number).strip()
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    marked = re.match(
        r"^(?P<main>.*\d)[\s,;]*(?:x|ext\.?|extension|innvalg|linje|lokal|intern|tast|#)"
        r"\s*(?P<ext>\d{1,6})\s*$",
        candidate,
        re.IGNORECASE,
    )
    if marked and ";ext=" not in candidate:
        candidate = f"{marked['main']} ext. {marked['ext']}"
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    main = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return f"{main};ext={parsed.extension}" if parsed.extension else main


_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@st.composite
def spelt_numbers(draw: st.DrawFn) -> str:
    """Norwegian numbers as people and systems spell them: with or without +47 or 0047,
    in groups or not, with or without an extension, now and then too short or too long
    or in full-width digits."""
    national = draw(st.text(alphabet="0123456789", min_size=7, max_size=9))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(national) - 1)), max_size=4)))
    groups = [national[i:j] for i, j in zip([0, *cuts], [*cuts, len(national)], strict=True)]
    spelt = draw(st.sampled_from(["", " "])).join(g for g in groups if g)
    prefix = draw(st.sampled_from(["", "+47", "+47 ", "0047", "0047 ", "+46 ", "47", " +47"]))
    number = prefix + spelt
    if draw(st.booleans()):  # an extension, as switchboards write them
        style = draw(
            st.sampled_from(
                [
                    ";ext=",
                    " x",
                    " x ",
                    "x",
                    " ext. ",
                    " ext ",
                    "#",
                    " linje ",
                    ", tast ",
                    " innvalg ",
                    " X",
                    ";ext=+",
                    " ext=",
                    " lokal",
                ]
            )
        )
        number += style + draw(st.text(alphabet="0123456789", min_size=0, max_size=8))
    return number.translate(_FULL_WIDTH) if draw(st.booleans()) else number


@settings(max_examples=500)
@given(spelt_numbers(), st.sampled_from(["NO", "SE", "DK"]))
@example("72058756 x072", "NO")  # an extension keeps its leading zeros
@example("22 33 44 55 linje 0", "NO")
@example("+47 72058756;ext=0012", "SE")
@example("0047 72 05 87 56 # 1234567", "NO")  # longer than people write: the library's
def test_e164_answers_as_libphonenumber_does(number: str, region: str) -> None:
    assert normalize.e164(number, region) == _by_phonenumbers(number, region)
