"""Fingerprints: the fast paths a first sync takes give exactly the fingerprints the
stored baselines hold (HMAC-SHA256 under the customer's key), so nothing stored before
looks changed after."""

from __future__ import annotations

import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import crypto, normalize
from daemon.domain import SYNC_FIELDS, ContactKind, ContactRecord, PhoneType

NAMES = tuple(sorted(SYNC_FIELDS))
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
numbers = st.sampled_from(["22 33 44 55", "+47 22334455", "22334455 x12", "900 00 000", "nope"])


@st.composite
def records(draw: st.DrawFn) -> ContactRecord:
    # Few distinct values, so that columns repeat and differently spelt numbers meet.
    return ContactRecord(
        system=draw(st.sampled_from(["firestore", "zisson"])),
        external_id=draw(st.text(alphabet="abc123", min_size=1, max_size=6)),
        kind=draw(st.sampled_from(list(ContactKind))),
        given_name=draw(st.sampled_from(["Åse", "A\u030ase", "Ola", ""]) | text),
        family_name=draw(st.sampled_from(["Bjørnstad", "Hansen"])),
        display_name=draw(text),
        title=draw(st.sampled_from(["Rådgiver", " Rådgiver ", ""])),
        department=draw(st.sampled_from(["Økonomi", ""])),
        emails=tuple(draw(st.lists(st.sampled_from(["ola@x.no", "OLA@X.NO", "post@x.no"]))))
        if draw(st.booleans())
        else (),
        phones=tuple(
            normalize.phone(n, t)
            for n, t in draw(
                st.lists(st.tuples(numbers, st.sampled_from(list(PhoneType))), max_size=3)
            )
        ),
        notes=draw(st.sampled_from(["", "ring etter 12"])),
    )


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=0, max_size=100), message=st.binary(max_size=200))
def test_the_precomputed_hmac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    mac = crypto._Hmac(key)  # keys longer than a block are hashed first, as RFC 2104 says
    assert mac.digest(message) == hmac.digest(key, message, "sha256")
    assert mac.fingerprints([message, message]) == [mac.fingerprint(message)] * 2


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(records(), max_size=25), key=st.binary(min_size=32, max_size=32))
def test_a_batch_has_the_fingerprints_of_one_record_at_a_time(
    batch: list[ContactRecord], key: bytes
) -> None:
    expected = [crypto.fingerprints(key, r, NAMES) for r in batch]
    fingerprinter = crypto.Fingerprinter(key)
    assert fingerprinter.many(batch, NAMES) == expected
    assert [fingerprinter.record(r, NAMES) for r in batch] == expected  # after the batch
    assert fingerprinter.digests(batch, NAMES) == [e[crypto.ALL] for e in expected]
    fingerprinter.forget_columns()
    # Digests given for some records (those a plan already judged), not for the others.
    known = [e[crypto.ALL] if i % 2 else None for i, e in enumerate(expected)]
    assert crypto.Fingerprinter(key).many(batch, NAMES, known) == expected
    assert crypto.Fingerprinter(key).many(batch, NAMES[:3]) == [
        crypto.fingerprints(key, r, NAMES[:3]) for r in batch
    ]


def test_equal_meaning_is_an_equal_fingerprint_in_a_batch_too() -> None:
    key = b"k" * 32
    spelt = [
        ContactRecord(
            system="zisson",
            external_id=str(i),
            kind=ContactKind.PERSON,
            given_name=given,
            phones=(normalize.phone(number, PhoneType.WORK),),
            emails=(email,),
        )
        for i, (given, number, email) in enumerate(
            [("Åse", "22 33 44 55", "Ola@X.no"), ("A\u030ase", "+47 22334455", "ola@x.no")]
        )
    ]
    first, second = crypto.Fingerprinter(key).many(spelt, NAMES)
    for name in ("given_name", "phones", "emails"):
        assert first[name] == second[name], name
    assert first[crypto.ALL] != second[crypto.ALL]  # the digest is exact: spelling counts
