"""Forecast tracking: keep every week's golden record (a vintage) and score it against what happened.

Pure pandas/numpy (no Dagster), like the forecasting core: the assets only load, call and store.
``vintages`` keeps the history, ``accuracy`` scores it, ``risk_calls`` checks whether risk calls
came true, ``lifecycle`` tells new exceptions from ongoing and resolved ones.
"""
