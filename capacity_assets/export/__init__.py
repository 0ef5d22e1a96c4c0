"""The published forecasts in other systems' formats (Prometheus' text exposition format)."""
