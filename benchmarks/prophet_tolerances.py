"""Prophet's fast path under other CmdStan L-BFGS settings: CPU per series and how far forecasts move.

    .venv/bin/python benchmarks/prophet_tolerances.py demo 12 history_size=20 tol_rel_grad=1e9 ...

Fits every series of a family (benchmarks/accuracy.py's fleets) once with the engine's settings
and once per variant (``key=value`` CmdStan optimize arguments, ``+`` joins several), one CmdStan
at a time, and prints ms of CPU per series (CmdStan included) and the largest, 99th-percentile and
mean absolute change of every forecast day against the engine's settings, in percentage points.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import accuracy as A

from capacity_assets.forecasting.engines import prophet as P
from capacity_assets.forecasting.engines.base import ForecastConfig


def cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


cfg = ForecastConfig() if not hasattr(A, "CFG") else A.CFG
fam = A.load_family(sys.argv[1], int(sys.argv[2]), 0, cfg)
hist = fam["history"]
orig = P._run_stan
variants = {"base": []}
for v in sys.argv[3:]:
    variants[v] = v.split("+")
res = {}
for name, extra in variants.items():

    def run_stan(data_path, init_path, out_path, algorithm, seed, extra=extra):
        import subprocess

        cmd = [
            P.STAN_BIN,
            "random",
            f"seed={seed}",
            "data",
            f"file={data_path}",
            f"init={init_path}",
            "output",
            f"file={out_path}",
            "refresh=0",
            "method=optimize",
            f"algorithm={algorithm}",
        ]
        if algorithm == "lbfgs":
            kv = dict(e.split("=") for e in extra)
            kv.setdefault("tol_rel_grad", "1e8")
            cmd += [f"{k}={v}" for k, v in kv.items()]
        cmd += ["iter=10000"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise P.FitError("fail")

    P._run_stan = run_stan
    c0 = cpu()
    rows, failed = P.predict(hist, cfg, workers=1)
    c = cpu() - c0
    n = hist.groupby(["server_id", "resource"]).ngroups
    res[name] = rows.set_index(["server_id", "resource", "ds", "split"])["yhat"]
    d = (res[name] - res["base"]).abs()
    print(
        f"{name:40s} {1000 * c / n:6.1f} ms/series  max|d| {d.max():.3f} pp  p99 {d.quantile(0.99):.3f}  mean {d.mean():.4f}",
        flush=True,
    )
