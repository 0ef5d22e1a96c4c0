"""capacity_assets: which servers run out of CPU, memory, disk or network in the next 90 days."""

__version__ = "0.1.0"
