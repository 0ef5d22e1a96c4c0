"""What if: planned changes (added load, resizes, migrations, retirements) applied on top of the
golden record, and the risk list and capacity plan they lead to.

Pure pandas (no Dagster): ``scenarios`` reads and checks the file (CAPACITY_SCENARIOS), ``apply``
turns a scenario into an adjusted golden record and its risk list and plan, ``compare`` says what
changed against the baseline. The assets (``pipeline/assets/whatif.py``) and `capacity whatif` both
call them, so the stored tables and the command agree.
"""
