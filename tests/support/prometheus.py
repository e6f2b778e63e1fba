"""Prometheus text expositions, parsed; and the key name that metrics and logs show."""

from __future__ import annotations


class Samples(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's own parser:
    ``samples.get_value(name, **labels)`` (0 for a series that does not exist)."""

    @classmethod
    def parse(cls, text: str) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        samples = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def get_value(self, name: str, **labels: str) -> float:
        return self.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, series), v in self.items() if n == name and wanted <= series)

    def names(self) -> set[str]:
        return {name for name, _ in self}


def key_name(key: str, keys: tuple[str, ...] | None = None) -> str:
    """The name logs and metrics show for ``key`` when it comes from RERANK_API_KEYS=``keys``
    (default: the tests' two keys, as the test servers are started)."""
    from rerank.service.router.auth import Keyring
    from tests.support import API_KEY, OTHER_KEY

    keys = keys or (API_KEY, OTHER_KEY)
    return Keyring.load(keys, None).keys[keys.index(key)].name
