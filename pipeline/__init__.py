"""The pure core: event contract, KPI arithmetic, windows, watermarks, simulator, settings.

Imports no Kafka, Faust, ClickHouse or Prometheus code (a unit test enforces it).
"""

__all__: list[str] = []
