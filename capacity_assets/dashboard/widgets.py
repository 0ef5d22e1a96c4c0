"""Small pieces several views share, so a table's height or a note's wording is the same everywhere."""

from __future__ import annotations

import re

import streamlit as st


def table_height(rows: int, cap: int = 420) -> int:
    """Pixels for a table of ``rows`` rows (a header and at least one row), scrolling beyond ``cap``."""
    return min(cap, 38 + 35 * max(rows, 1))


def safe_filename(*parts: str) -> str:
    """A download name from filter values: departments and managers from a CMDB can hold anything."""
    return (
        "_".join(re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-").lower() or "x" for p in parts) + ".csv"
    )


def not_loaded_note() -> None:
    """Said instead of a view a run kept from loading even once: a blank tab reads as lost data."""
    st.info(
        "⏳ The pipeline is refreshing the data and this view has not been loaded yet; "
        "it appears as soon as the run releases the database. Reload the page in a minute."
    )
