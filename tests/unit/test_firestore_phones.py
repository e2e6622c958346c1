"""Phone entries on the card keep the keys pdsync does not manage (`extension`, `label`:
the card app's data) when pdsync updates the phones (mapping.keep_phone_extras)."""

from __future__ import annotations

from connectors.firestore.mapping import holds, keep_phone_extras, to_fields
from daemon.domain import Phone, PhoneType

STORED = [
    {"number": "22 33 44 55", "type": "work", "extension": "12", "label": "Sentralbord"},
    {"number": "+47 912 34 567", "type": "mobile", "label": "Privat"},
    {"number": "0047 22 99 88 77", "type": "home"},
]


def phones(*items: Phone) -> list[dict[str, str]]:
    return to_fields({"phones": items})["phones"]  # type: ignore[no-any-return]


def test_an_entry_keeps_its_own_keys_whatever_format_its_number_is_written_in() -> None:
    wanted = phones(
        Phone(number="22334455", type=PhoneType.WORK),
        Phone(number="91234567", type=PhoneType.MOBILE),
    )

    assert keep_phone_extras(STORED, wanted) == [
        {"number": "22334455", "type": "work", "extension": "12", "label": "Sentralbord"},
        {"number": "91234567", "type": "mobile", "label": "Privat"},
    ]


def test_a_new_entry_has_no_extras_and_a_removed_one_takes_its_keys_along() -> None:
    wanted = phones(Phone(number="40000000", type=PhoneType.MOBILE))

    assert keep_phone_extras(STORED, wanted) == [{"number": "40000000", "type": "mobile"}]


def test_the_same_number_with_another_type_keeps_its_keys_unless_its_type_is_there_too() -> None:
    changed = phones(Phone(number="+4791234567", type=PhoneType.WORK))
    assert keep_phone_extras(STORED, changed) == [
        {"number": "+4791234567", "type": "work", "label": "Privat"}
    ]
    # Same number, two types: the one of the stored type keeps the keys.
    both = phones(
        Phone(number="22334455", type=PhoneType.FAX),
        Phone(number="22334455", type=PhoneType.WORK),
    )
    assert keep_phone_extras(STORED, both) == [
        {"number": "22334455", "type": "fax"},
        {"number": "22334455", "type": "work", "extension": "12", "label": "Sentralbord"},
    ]


def test_an_extension_in_the_number_is_another_line() -> None:
    wanted = phones(Phone(number="22334455 x12", type=PhoneType.WORK))

    assert keep_phone_extras(STORED, wanted) == [{"number": "22334455 x12", "type": "work"}]


def test_managed_keys_are_always_the_new_ones_and_odd_stored_values_are_ignored() -> None:
    stored = [{"number": "22334455", "type": "work", "label": "x"}, "not a map", {"number": 5}]
    wanted = phones(Phone(number="22 33 44 55", type=PhoneType.WORK))

    assert keep_phone_extras(stored, wanted) == [
        {"label": "x", "number": "22 33 44 55", "type": "work"}
    ]
    assert keep_phone_extras(None, wanted) == wanted


def test_holds_compares_only_what_pdsync_manages_of_a_phone() -> None:
    stored = {"phones": [{"number": "22334455", "type": "work", "label": "Sentralbord"}]}

    assert holds(stored, {"phones": phones(Phone(number="22334455", type=PhoneType.WORK))})
    assert not holds(stored, {"phones": phones(Phone(number="22334455", type=PhoneType.HOME))})
