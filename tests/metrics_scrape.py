"""Reading a Prometheus text page the way Prometheus does, for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, *, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def get(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not (yet) exported."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` that has `labels` (others free)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return get(after, name, **labels) - get(before, name, **labels)


def wait_for_sample(
    read: Callable[[], Samples],
    check: Callable[[Samples], bool],
    *,
    timeout_s: float,
    what: str,
) -> Samples:
    """The first samples `read` gives that pass `check`."""

    def passing() -> tuple[Samples] | None:  # in a tuple: empty samples are still an answer
        samples = read()
        return (samples,) if check(samples) else None

    return wait_until(passing, timeout_s=timeout_s, interval_s=0.5, what=what)[0]
