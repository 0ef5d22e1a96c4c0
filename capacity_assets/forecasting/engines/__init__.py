"""Forecasting engines. See ``base`` for the engine contract and ``registry`` for the contenders."""
