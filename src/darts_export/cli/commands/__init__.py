"""The ``darts-export`` subcommands, one module each (``export`` and ``demo`` share one)."""
