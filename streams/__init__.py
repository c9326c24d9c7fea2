"""Every Kafka touch: the Faust worker, producers, the collector, and the CLI.

Only the entry points (``cli``, ``run``, ``demo``, ``bench``) import ``sinks``.
"""

__all__: list[str] = []
