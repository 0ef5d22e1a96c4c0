"""The console logger of every job: Dagster's own, minus a warning an operator cannot act on.

Two runs that materialise different batches of the same asset at once make Dagster warn "Data
version mismatch" (its provenance looks up the asset's newest materialisation, which is the other
run's batch). It is harmless and says nothing about the data, so it stays in the run's event log
(the UI) but not on the console of `capacity run`.
"""

from __future__ import annotations

import logging

import dagster as dg

NOT_FOR_THE_CONSOLE = ("Data version mismatch for asset",)


def _for_the_console(record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not any(phrase in text for phrase in NOT_FOR_THE_CONSOLE)


@dg.logger(
    config_schema=dg.colored_console_logger.config_schema,
    description="Dagster's colored console logger, without its data-version provenance warning",
)
def console(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = dg.colored_console_logger.logger_fn(init_context)
    log.addFilter(_for_the_console)
    return log
