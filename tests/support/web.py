"""Plain HTTP against a gateway: JSON endpoints and the Prometheus `/metrics` page."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


async def http_json(url: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any]:
    """(status, body): the body parsed as JSON, or as text when it is not JSON."""
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        body = await response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body.decode(errors="replace")


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """`GET /metrics`, parsed: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200, response.status
        text = await response.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
