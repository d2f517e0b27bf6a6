"""A simulated Tesla Powerwall gateway (local /api/* JSON API and TEDAPI over HTTPS).

    from proxy.simulator import Simulator
    with Simulator(port=0, model="pw3", seed=1) as sim:
        pypowerwall.Powerwall(host=sim.host, password="password", ...)

Run standalone with ``python3 -m proxy.simulator --port 8443``.
"""

from .simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD, Simulator

__all__ = ["DEFAULT_GW_PWD", "DEFAULT_PASSWORD", "Simulator"]
