"""A chat adapter's own /metrics and /healthz (ADAPTER_METRICS_PORT; off unless set): whether it is connected to its
platform (`kullm_platform_connected`: the Discord gateway, Slack's Socket Mode, or Slack's HTTP mode while it
serves), for Prometheus and the "front-end disconnected" alert (deploy/monitoring/alerts.yml), and for a probe."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from bot.settings import ClientSettings
from runtime.metrics_http import Endpoint, PortsTaken, serve

log = logging.getLogger(__name__)


class AdapterMetrics:
    """One adapter's gauges, on a registry of its own."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.registry = CollectorRegistry()
        self._connected = Gauge(
            "kullm_platform_connected",
            "1 while the adapter is connected to its chat platform",
            ["platform"],
            registry=self.registry,
        ).labels(platform)
        self._connected.set(0)
        self.connected = False

    def set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            log.info("%s: %s", self.platform, "connected" if connected else "disconnected")
        self.connected = connected
        self._connected.set(1 if connected else 0)

    async def serve(self, settings: ClientSettings) -> Endpoint | None:
        """Serve /metrics and /healthz (200 connected, 503 not) where ADAPTER_METRICS_PORT says; None when it is 0,
        or taken (said in the log: the adapter runs on without them)."""
        if not settings.adapter_metrics_port:
            return None

        async def healthz(_: web.Request) -> web.Response:
            body = {"status": "connected" if self.connected else "disconnected", "platform": self.platform}
            return web.json_response(body, status=200 if self.connected else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        try:
            return await serve(
                settings.adapter_metrics_host,
                settings.adapter_metrics_port,
                {"/healthz": healthz, "/metrics": metrics},
                role="bot",
            )
        except PortsTaken as exc:
            log.error("ADAPTER_METRICS_PORT: %s: the %s bot runs on without /metrics", exc, self.platform)
            return None
