import json
import os
import subprocess
import sys
from collections import Counter

from capacity_assets.inputs.batching import batch_keys, batch_of, servers_in_batch


def test_batch_keys_are_sorted_and_zero_padded():
    assert batch_keys(3) == ["batch_00", "batch_01", "batch_02"]
    assert batch_keys(120)[-1] == "batch_119" and batch_keys(120)[5] == "batch_005"


def test_a_server_never_moves_when_others_come_and_go():
    fleet = [f"srv-{i:05d}" for i in range(500)]
    before = {s: batch_of(s, 20) for s in fleet}
    grown = fleet + [f"new-{i}" for i in range(100)]
    shrunk = fleet[::2]
    assert all(batch_of(s, 20) == before[s] for s in grown if s in before)
    assert all(batch_of(s, 20) == before[s] for s in shrunk)
    assert set(servers_in_batch(grown, "batch_03", 20)) >= {
        s for s in fleet if before[s] == "batch_03"
    }


# Literal keys, computed once with md5 as documented (README: "the md5 hash of its server_id"). They
# must never change: a changed hash would move every server to another batch on upgrade.
PINNED = {  # server_id: (batch of 3, batch of 20, batch of 120)
    "web-prd-00042": ("batch_00", "batch_08", "batch_108"),
    "srv-00001": ("batch_00", "batch_07", "batch_087"),
    "db-01": ("batch_00", "batch_17", "batch_117"),
    "ünïcode 服务器": ("batch_01", "batch_06", "batch_106"),
    "srv'; drop table forecasts; --": ("batch_00", "batch_04", "batch_024"),
    "frac srv": ("batch_02", "batch_14", "batch_014"),
    "short 5min": ("batch_00", "batch_00", "batch_060"),
}
# batch_of(f"srv-{i}", 20) for i in range(4000): per-batch counts, also computed once
SPREAD_4000 = {
    "batch_00": 186,
    "batch_01": 210,
    "batch_02": 208,
    "batch_03": 193,
    "batch_04": 210,
    "batch_05": 201,
    "batch_06": 188,
    "batch_07": 191,
    "batch_08": 188,
    "batch_09": 191,
    "batch_10": 221,
    "batch_11": 212,
    "batch_12": 210,
    "batch_13": 202,
    "batch_14": 189,
    "batch_15": 218,
    "batch_16": 207,
    "batch_17": 187,
    "batch_18": 191,
    "batch_19": 197,
}


def test_assignment_is_pinned_to_fixed_keys_and_spreads_evenly():
    for server, expected in PINNED.items():
        assert tuple(batch_of(server, n) for n in (3, 20, 120)) == expected, server
    counts = Counter(batch_of(f"srv-{i}", 20) for i in range(4000))
    assert dict(counts) == SPREAD_4000
    assert min(counts.values()) > 120 and max(counts.values()) < 280


def test_assignment_is_the_same_in_another_process_with_another_hash_seed(tmp_path):
    """Python's salted hash() would differ between processes; md5 must not."""
    ids = list(PINNED) + [f"srv-{i}" for i in range(200)]
    code = (
        "import json, sys; from capacity_assets.inputs.batching import batch_of; "
        "print(json.dumps([batch_of(s, 20) for s in json.load(sys.stdin)]))"
    )
    elsewhere = []
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(ids),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=tmp_path,
            check=True,
        )
        elsewhere.append(json.loads(proc.stdout))
    here = [batch_of(s, 20) for s in ids]
    assert elsewhere[0] == elsewhere[1] == here
    assert len(set(here)) == 20  # not a constant
