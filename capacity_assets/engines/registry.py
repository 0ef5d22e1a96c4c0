"""The tournament's contenders: name -> engine module path.

Adding a contender (say ETS) is one module implementing the contract in ``base`` and one line here;
the asset graph makes a ``<name>_results`` asset and the tournament scores it.
"""
from __future__ import annotations

import importlib
from types import ModuleType

CONTENDERS: dict[str, str] = {
    "prophet": "capacity_assets.engines.prophet",
    "challenger": "capacity_assets.engines.xgboost",
}


def engine(name: str) -> ModuleType:
    return importlib.import_module(CONTENDERS[name])
