"""Every Kafka touch: the Faust worker, producers, the collector, and the CLI.

Only the composition root (``cli``, ``run``, ``demo``) imports ``sinks``.
"""

__all__: list[str] = []
