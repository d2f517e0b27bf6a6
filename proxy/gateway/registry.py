"""`Gateways`: every configured gateway by id, the default one first; starts and stops them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from proxy.gateway.adapter import Gateway


class Gateways:
    """An ordered, fixed registry: built once in main(), never changed afterwards."""

    def __init__(self, gateways: Sequence[Gateway]) -> None:
        if not gateways:
            raise ValueError("at least one gateway")
        self._by_id = {g.id: g for g in gateways}
        if len(self._by_id) != len(gateways):
            raise ValueError("gateway ids must be unique")

    def default(self) -> Gateway:
        return next(iter(self._by_id.values()))

    def get(self, gateway_id: str) -> Gateway | None:
        return self._by_id.get(gateway_id)

    def __iter__(self) -> Iterator[Gateway]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def start(self) -> None:
        for gateway in self:
            gateway.start()

    def stop(self) -> None:
        for gateway in self:
            gateway.stop()

    def wait_connected(self, timeout: float) -> bool:
        return all([g.wait_connected(timeout) for g in self])
