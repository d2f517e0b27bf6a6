"""Registries by gateway id, the default one first: `Gateways` (adapters) and the generic base
that `proxy.site.Sites` shares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from proxy.gateway.adapter import Gateway


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)


class Registry(Generic[T]):
    """An ordered, fixed registry: built once in main(), never changed afterwards."""

    def __init__(self, items: Sequence[T]) -> None:
        if not items:
            raise ValueError("at least one gateway")
        self._by_id = {item.id: item for item in items}
        if len(self._by_id) != len(items):
            raise ValueError("gateway ids must be unique")

    def default(self) -> T:
        return next(iter(self._by_id.values()))

    def get(self, gateway_id: str) -> T | None:
        return self._by_id.get(gateway_id)

    def __iter__(self) -> Iterator[T]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


class Gateways(Registry[Gateway]):
    """Every gateway adapter; starts and stops them all."""

    def start(self) -> None:
        for gateway in self:
            gateway.start()

    def stop(self) -> None:
        for gateway in self:
            gateway.stop()

    def wait_connected(self, timeout: float) -> bool:
        return all([g.wait_connected(timeout) for g in self])
