"""Which stored tokens a whole-customer erasure forgets: its own accounts', never one
another configured customer still uses."""

from __future__ import annotations

from pathlib import Path

from daemon import config
from daemon.token_vault import own_token_accounts
from tests.unit.test_config import GOOD, write

SECOND = """
[[customers]]
id = "kunde-02"
name = "Annen AS"
[customers.firestore]
customer_id = "kunde-02"
[customers.zisson]
api = "json"
user_id = "u2"
customer_guid = "{guid}"
refresh_token_file = "{{tmp}}/token2"

[[customers]]
id = "kunde-03"
name = "XML AS"
[customers.firestore]
customer_id = "kunde-03"
[customers.zisson]
api = "xml"
username = "x@xml.no"
password = {{{{ env = "PDSYNC_TEST_NONE" }}}}
"""


def test_only_the_customers_own_json_account_is_forgotten(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, GOOD + SECOND.format(guid="g2")))
    assert own_token_accounts(settings, "kunde-01") == [("zisson", "json:g1")]
    assert own_token_accounts(settings, "kunde-02") == [("zisson", "json:g2")]
    assert own_token_accounts(settings, "kunde-03") == []  # XML: a password, no token


def test_an_account_another_customer_shares_is_kept(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, GOOD + SECOND.format(guid="g1")))
    assert own_token_accounts(settings, "kunde-01") == []
    assert own_token_accounts(settings, "kunde-02") == []
