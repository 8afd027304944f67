"""Runs per tenant on /metrics: `sharpness_tenant_runs{tenant, kind, status}`, the queued and
running jobs and trajectories each configured tenant owns, so an ops team sees who fills the
queue (and who is near its max_active_runs)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.tenants.ownership import RUN_STATUS_KEYS
from service.tenants.quotas import ACTIVE
from tasks.store.owners import Owners

log = logging.getLogger("sharpness.gateway")


class TenantRunsCollector(Collector):
    def __init__(self, owners: Owners, tenants: list[str]) -> None:
        self.owners, self.tenants = owners, tenants

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "sharpness_tenant_runs",
            "Queued and running records per tenant.",
            labels=["tenant", "kind", "status"],
        )
        try:
            for tenant in self.tenants:
                for kind, status_key in RUN_STATUS_KEYS.items():
                    for status in ACTIVE:
                        n = self.owners.count_within(kind, tenant, status_key(status))
                        family.add_metric([tenant, kind, status.value], n)
        except redis.RedisError as e:
            log.warning("metrics scrape: tenant runs not counted: %s", e)
            return
        yield family
