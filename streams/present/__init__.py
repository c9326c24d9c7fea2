"""What people read: the board report (HTML page, terminal table, CSV, JSON), its charts,
the tables ``socialroi bench`` prints and the progress line of long commands.

Nothing here touches Kafka, Faust or ClickHouse, and nothing imports the rest of ``streams``
or ``sinks`` (``tests/unit/test_boundaries.py`` pins it): the entry points fetch the numbers
and hand them over.
"""

__all__: list[str] = []
