import inspect

import pytest

from capacity_assets.forecasting.engines.base import EngineModule
from capacity_assets.forecasting.engines.registry import COMBINERS, ENGINES, engine

FITTED = [n for n in ENGINES if n not in COMBINERS]


@pytest.mark.parametrize("name", FITTED)
def test_every_fitted_engine_has_the_interface_run_calls(name):
    module = engine(name)
    assert isinstance(module, EngineModule)
    params = list(inspect.signature(module.predict).parameters.values())
    assert [p.name for p in params[:3]] == ["history", "cfg", "log"]
    assert params[2].default is None
    # anything beyond the protocol must be optional: run passes only these three
    assert all(p.default is not inspect.Parameter.empty for p in params[3:])
