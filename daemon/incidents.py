"""Incidents (O10): what may be a personal data breach, or lead to one, recorded as run
events named `incident_*` at level error, logged at error, counted in /metrics
(`pdsync_incidents_24h`) and listed on the dashboard, so the operator is alerted and
can notify the customer without undue delay.

- AUTH_FAILED: a system refused pdsync's credentials (revoked, expired, or someone
  else rotated them: worth a look);
- MASS_DELETION_HELD: a sync would have deleted more than the deletion threshold allows
  (an unexpected mass change); it waits for an approval;
- MASS_CREATION_HELD: the same for creating contacts in a system that holds the
  customer's contacts already (a read that came back empty would re-create them all);
- SOURCE_SHRUNK: a system read empty, or far fewer records than it held at the last
  sync (an outage, a wrong account, a mistyped binding); the run waits, changing
  nothing anywhere, until the read recovers or an operator approves;
- ERASED_DATA_REAPPEARED: erased data was found again in a system (restored from a
  backup, typed in again); it is erased again.
"""

from __future__ import annotations

from connectors.base import AuthError

PREFIX = "incident_"
AUTH_FAILED = "incident_auth_failed"
MASS_DELETION_HELD = "incident_mass_deletion_held"
MASS_CREATION_HELD = "incident_mass_creation_held"
SOURCE_SHRUNK = "incident_source_shrunk"
ERASED_DATA_REAPPEARED = "incident_erased_data_reappeared"


def for_error(exc: BaseException) -> str | None:
    """The incident a connector error amounts to, if any."""
    return AUTH_FAILED if isinstance(exc, AuthError) else None
