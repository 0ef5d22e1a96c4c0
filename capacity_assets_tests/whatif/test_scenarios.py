"""A bad scenarios file is refused before anything runs, naming the scenario, the change and the
field; a good one reads as written."""

import pandas as pd
import pytest

from capacity_assets import config
from capacity_assets.whatif.scenarios import Fleet, ScenarioError, check, load

HIERARCHY = pd.DataFrame(
    {
        "server_id": ["srv-1", "srv-2", "srv-3"],
        "department": ["Payments", "Payments", "Data"],
        "app_manager": ["ann", "ann", "bo"],
        "application": ["app-07", "app-07", "app-09"],
        "memory_gb": [64, None, 32],
    }
)
FLEET = Fleet(
    frozenset(HIERARCHY["server_id"]),
    HIERARCHY,
    pd.Timestamp("2027-01-01"),
    pd.Timestamp("2027-06-29"),
)
GOOD = """\
onboard-payments:
  - add_load: {servers: [srv-1, srv-2], resources: [cpu, memory], from: 2027-03-01, points: 20,
               ramp_days: 14}
  - resize: {where: {application: app-07}, resources: [memory], from: 2027-02-01, factor: 2}
  - migrate: {from_server: srv-3, to_server: srv-1, resources: [cpu], from: 2027-04-01,
              share: 0.5}
  - retire: {servers: [srv-2], from: 2027-05-01, to_server: srv-3}
unchanged: []
"""


def write(tmp_path, text):
    path = tmp_path / "scenarios.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_issue_example_reads_as_written(tmp_path):
    scenarios = load(write(tmp_path, GOOD))
    check(scenarios, FLEET)
    assert [s.name for s in scenarios] == ["onboard-payments", "unchanged"]
    add, resize, migrate, retire = scenarios[0].changes
    assert (add.servers, add.resources, add.points, add.ramp_days) == (
        ("srv-1", "srv-2"),
        ("cpu", "memory"),
        20.0,
        14,
    )
    assert add.start == pd.Timestamp("2027-03-01")
    assert (resize.where, resize.factor) == ((("application", ("app-07",)),), 2.0)
    assert (migrate.from_server, migrate.to_server, migrate.share) == ("srv-3", "srv-1", 0.5)
    assert (retire.servers, retire.to_server) == (("srv-2",), "srv-3")
    assert scenarios[1].changes == ()


CHANGE = "{servers: [srv-1], resources: [cpu], from: 2027-03-01, points: 20}"
BAD_SHAPE = [
    # (the scenario's changes, what the message must name)
    (f"[{{add_lode: {CHANGE}}}]", ["change 1", "unknown change type 'add_lode'"]),
    (
        "[{add_load: {servers: [srv-1], resources: [cpu], points: 20}}]",
        ["change 1 (add_load)", "field 'from'", "missing"],
    ),
    (
        "[{add_load: {servers: [srv-1], resources: [cpu], from: 2027-03-01}}]",
        ["change 1 (add_load)", "field 'points'"],
    ),
    (
        "[{migrate: {from_server: srv-1, to_server: srv-2, resources: [cpu], from: 2027-03-01, "
        "share: 1.5}}]",
        ["change 1 (migrate)", "field 'share'", "1.5", "at most 1"],
    ),
    (
        f"[{{add_load: {CHANGE}}}, {{add_load: {{servers: [srv-1], resources: [gpu], "
        "from: 2027-03-01, points: 5}}]",
        ["change 2 (add_load)", "field 'resources'", "gpu"],
    ),
    (
        "[{add_load: {servers: [srv-1], resources: [cpu], from: 2027-03-01, point: 20}}]",
        ["change 1 (add_load)", "field 'point'", "unknown field"],
    ),
    (
        "[{add_load: {servers: [srv-1], resources: [cpu], from: 1st of March, points: 20}}]",
        ["field 'from'", "YYYY-MM-DD"],
    ),
    (
        "[{resize: {servers: [srv-1], resources: [memory], from: 2027-03-01, factor: 2, "
        "memory_gb: 128}}]",
        ["change 1 (resize)", "field 'factor'", "not both"],
    ),
    (
        "[{resize: {servers: [srv-1], resources: [memory], from: 2027-03-01, factor: 0}}]",
        ["field 'factor'", "above 0"],
    ),
]


@pytest.mark.parametrize("changes, expected", BAD_SHAPE)
def test_a_malformed_change_is_refused_naming_scenario_change_and_field(
    tmp_path, changes, expected
):
    path = write(tmp_path, f"fine: []\nonboard-payments: {changes}\n")
    with pytest.raises(ScenarioError) as e:
        load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: scenario 'onboard-payments'"), message
    for part in expected:
        assert part in message, message


BAD_DATA = [
    (
        "{add_load: {servers: [srv-1, srv-99], resources: [cpu], from: 2027-03-01, points: 20}}",
        ["change 1 (add_load)", "field 'servers'", "unknown server 'srv-99'"],
    ),
    (
        "{migrate: {from_server: srv-1, to_server: srv-x, resources: [cpu], from: 2027-03-01, "
        "share: 0.5}}",
        ["change 1 (migrate)", "field 'to_server'", "unknown server 'srv-x'"],
    ),
    (
        "{add_load: {servers: [srv-1], resources: [cpu], from: 2027-07-01, points: 20}}",
        ["field 'from'", "2027-07-01 is outside the forecast (2027-01-01 to 2027-06-29)"],
    ),
    (
        "{add_load: {where: {application: app-99}, resources: [cpu], from: 2027-03-01, points: 5}}",
        ["field 'where'", "no server has application = 'app-99'"],
    ),
    (
        "{add_load: {where: {pool: p1}, resources: [cpu], from: 2027-03-01, points: 5}}",
        ["field 'where'", "no hierarchy column 'pool'"],
    ),
    (
        "{resize: {servers: [srv-1, srv-2], from: 2027-03-01, memory_gb: 128}}",
        ["change 1 (resize)", "field 'memory_gb'", "'srv-2' has no memory_gb", "factor"],
    ),
    (
        "{retire: {where: {application: app-07}, from: 2027-03-01, to_server: srv-2}}",
        ["change 1 (retire)", "field 'to_server'", "one of the servers it retires"],
    ),
]


@pytest.mark.parametrize("change, expected", BAD_DATA)
def test_a_change_the_data_contradicts_is_refused_naming_it(tmp_path, change, expected):
    scenarios = load(write(tmp_path, f"what-if:\n  - {change}\n"))
    with pytest.raises(ScenarioError) as e:
        check(scenarios, FLEET)
    message = str(e.value)
    assert "scenario 'what-if'" in message, message
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a: []\na: []\n", "'a' is given twice"),
        ("- add_load: {}\n", "expected a mapping from scenario name"),
        ("x: {add_load: {}}\n", "scenario 'x': expected a list of changes"),
        ("x: [", "not a readable YAML file"),
    ],
)
def test_a_file_of_the_wrong_shape_is_refused(tmp_path, text, expected):
    with pytest.raises(ScenarioError, match=expected):
        load(write(tmp_path, text))


def test_the_setting_refuses_a_bad_file_when_the_settings_load(tmp_path):
    path = write(tmp_path, "x: [{add_load: {servers: [a], from: 2027-03-01, points: 2}}]\n")
    with pytest.raises(config.ConfigError) as e:
        config.load({"CAPACITY_SCENARIOS": str(path)})
    assert "CAPACITY_SCENARIOS" in str(e.value) and "field 'resources'" in str(e.value)
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load({"CAPACITY_SCENARIOS": str(tmp_path / "nope.yaml")})
    assert config.load({"CAPACITY_SCENARIOS": str(write(tmp_path, GOOD))}).scenarios
