"""Deterministic simulation of the lost-message race (``delivery simulate``)."""

from .engine import Simulation
from .params import SCENARIOS, Params, scenario_params

__all__ = ["SCENARIOS", "Params", "Simulation", "run", "scenario_params"]


def run(params: Params) -> dict[str, object]:
    """Run one simulation and return its JSON-able result."""
    return Simulation(params).run()
