"""/metrics: what Prometheus scrapes, read from the store at scrape time.

Every value is read from the store when scraped, so all instances on one database
report the same, and nothing is lost on restart; only the connectors' retry and request
counters and the API's failed-authentication counters are this process's own. Imported
by the /metrics route at the first scrape: prometheus_client is not loaded before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from daemon import incidents
from daemon.api.context import ApiContext
from daemon.store import ErasureState, EventLevel, RunRow, RunStatus

_OPEN = {
    ErasureState.RECEIVED,
    ErasureState.PLANNED,
    ErasureState.AWAITING_APPROVAL,
    ErasureState.EXECUTING,
    ErasureState.VERIFYING,
}


def _last_sync(runs: Iterable[RunRow]) -> RunRow | None:
    return next((r for r in runs if r.kind == "sync" and r.finished_at is not None), None)


class StoreCollector(Collector):
    """Reads the metrics from the store at every scrape."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        yield from self._sync()
        yield from self._erasures()
        yield from self._ledger()
        yield from self._connectors()
        yield from self._incidents()
        yield from self._auth()

    def _auth(self) -> Iterator[Metric]:
        limiter = self.ctx.limiter
        failures = CounterMetricFamily(
            "pdsync_api_auth_failures",
            "Failed authentications (missing, invalid, login) since start; not in the audit log",
            labels=["kind"],
        )
        for kind, n in sorted(limiter.failures.items()):
            failures.add_metric([kind], n)
        yield failures
        yield CounterMetricFamily(
            "pdsync_api_auth_rate_limited",
            "Requests refused with 429 after too many failed authentications, since start",
            value=limiter.refused,
        )
        yield GaugeMetricFamily(
            "pdsync_api_auth_limited_clients",
            "Client addresses with recent failed authentications (bounded)",
            value=len(limiter),
        )

    def _incidents(self) -> Iterator[Metric]:
        since = datetime.now(UTC) - timedelta(hours=24)
        events = self.ctx.store.run_events(since=since, min_level=EventLevel.ERROR, limit=10_000)
        found = Counter(
            (e.customer_id or "", e.event) for e in events if e.event.startswith(incidents.PREFIX)
        )
        family = GaugeMetricFamily(
            "pdsync_incidents_24h",
            "Incidents (failed auth, held mass deletions, erased data found again) in 24 h",
            labels=["customer", "kind"],
        )
        for (customer, kind), n in sorted(found.items()):
            family.add_metric([customer, kind.removeprefix(incidents.PREFIX)], n)
        yield family

    def _sync(self) -> Iterator[Metric]:
        store = self.ctx.store
        duration = GaugeMetricFamily(
            "pdsync_sync_last_duration_seconds",
            "Duration of the last finished sync",
            labels=["customer"],
        )
        finished = GaugeMetricFamily(
            "pdsync_sync_last_finished_timestamp_seconds",
            "When the last sync finished",
            labels=["customer"],
        )
        success = GaugeMetricFamily(
            "pdsync_sync_last_success", "1 if the last sync completed, else 0", labels=["customer"]
        )
        changes = GaugeMetricFamily(
            "pdsync_sync_last_changes",
            "Changes applied by the last sync, per system",
            labels=["customer", "system"],
        )
        disputes = GaugeMetricFamily("pdsync_disputes_open", "Open disputes", labels=["customer"])
        tasks = GaugeMetricFamily(
            "pdsync_manual_tasks_open", "Open manual tasks", labels=["customer"]
        )
        quarantined = GaugeMetricFamily(
            "pdsync_quarantine_open", "Quarantined records not released", labels=["customer"]
        )
        for customer in self.ctx.settings.customers:
            cid = customer.id
            last = _last_sync(store.list_runs(customer_id=cid, limit=20))
            if last is not None and last.finished_at is not None:
                duration.add_metric([cid], (last.finished_at - last.started_at).total_seconds())
                finished.add_metric([cid], last.finished_at.timestamp())
                success.add_metric([cid], 1.0 if last.status is RunStatus.COMPLETED else 0.0)
                applied: Counter[str] = Counter()
                for key, n in (last.summary.get("applied") or {}).items():
                    system, _, status = str(key).partition(".")
                    if status.endswith(".applied"):
                        applied[system] += int(n)
                for system in sorted(customer.bindings()):
                    changes.add_metric([cid, system], applied[system])
            counts = store.counts(cid)
            disputes.add_metric([cid], counts["open_disputes"])
            tasks.add_metric([cid], counts["open_tasks"])
            quarantined.add_metric([cid], counts["quarantined"])
        yield from (duration, finished, success, changes, disputes, tasks, quarantined)

    def _erasures(self) -> Iterator[Metric]:
        rows = self.ctx.store.list_erasures(limit=100_000)
        now = datetime.now(UTC)
        by_state = Counter(r.state for r in rows)
        states = GaugeMetricFamily("pdsync_erasures", "Erasure requests by state", labels=["state"])
        for state in ErasureState:
            states.add_metric([state.value], by_state[state])
        open_rows = [r for r in rows if r.state in _OPEN]
        oldest = min((r.requested_at for r in open_rows), default=None)
        yield states
        yield GaugeMetricFamily(
            "pdsync_erasure_oldest_open_age_seconds",
            "Age of the oldest open erasure request (0: none open)",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "pdsync_erasures_overdue",
            "Open erasure requests past their deadline",
            value=sum(1 for r in open_rows if r.deadline < now),
        )

    def _ledger(self) -> Iterator[Metric]:
        store = self.ctx.store
        yield GaugeMetricFamily(
            "pdsync_ledger_entries", "Entries in the ledger", value=store.ledger_size()
        )
        checkpoint = store.latest_checkpoint()
        yield GaugeMetricFamily(
            "pdsync_ledger_checkpoint_size",
            "Entries covered by the latest signed checkpoint",
            value=checkpoint.size if checkpoint else 0,
        )
        tokens = GaugeMetricFamily("pdsync_api_tokens_active", "Active API tokens", labels=["role"])
        active = Counter(t.role for t in store.list_tokens(include_revoked=False))
        for role, n in sorted(active.items()):
            tokens.add_metric([role.value], n)
        yield tokens

    def _connectors(self) -> Iterator[Metric]:
        retries = CounterMetricFamily(
            "pdsync_connector_retries",
            "Calls retried (429, 5xx, timeouts) since start",
            labels=["connector"],
        )
        requests = CounterMetricFamily(
            "pdsync_connector_requests", "Requests sent since start", labels=["connector"]
        )
        throttled = CounterMetricFamily(
            "pdsync_connector_throttled",
            "Answers of HTTP 429 (Graph: $batch items too) since start",
            labels=["connector"],
        )
        for system, connector in sorted(self.ctx.connectors.items()):
            for family, name in (
                (retries, "retries"),
                (requests, "requests"),
                (throttled, "throttled"),
            ):
                value = getattr(connector, name, None)
                if isinstance(value, int):
                    family.add_metric([system], value)
        yield from (retries, requests, throttled)


def registry_for(ctx: ApiContext) -> CollectorRegistry:
    """A registry of this app's own (not the process-global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(ctx))
    return registry


def exposition(ctx: ApiContext) -> bytes:
    """The metrics in Prometheus' text format (probes.METRICS_CONTENT_TYPE)."""
    return generate_latest(registry_for(ctx))
