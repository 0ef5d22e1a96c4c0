"""What the launcher already learnt of the input, handed to each run of a range of batches.

`capacity run` inspects every input file and fingerprints every batch before it starts any run;
handing each run its own batches' share (the files, which server is in which of its batches, their
fingerprints) spares every run a scan of the whole fleet, and on a cluster the step needs nothing
but the files themselves (a path every worker can read).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace

from capacity_assets.inputs.files import SourceFile


@dataclass(frozen=True)
class Inspected:
    sources: list[SourceFile]
    server_batch: dict[str, str]  # server -> batch, for the run's batches only
    fingerprints: dict[str, str]  # batch -> fingerprint, for the run's batches only

    @property
    def batches(self) -> set[str]:
        return set(self.fingerprints)

    def share(self, keys: list[str]) -> Inspected:
        """The share of batches ``keys``: their servers and fingerprints, and every source file
        by its absolute path (a worker runs in a folder of its own)."""
        wanted = set(keys)
        return Inspected(
            [replace(s, path=os.path.abspath(s.path)) for s in self.sources],
            {s: b for s, b in self.server_batch.items() if b in wanted},
            {b: fp for b, fp in self.fingerprints.items() if b in wanted},
        )

    def dumps(self) -> str:
        return json.dumps(
            {
                "sources": [asdict(s) for s in self.sources],
                "server_batch": self.server_batch,
                "fingerprints": self.fingerprints,
            },
            sort_keys=True,
        )


def loads(text: str) -> Inspected:
    data = json.loads(text)
    return Inspected(
        [SourceFile(**s) for s in data["sources"]], data["server_batch"], data["fingerprints"]
    )
