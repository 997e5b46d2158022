"""One module per ``mascds`` command. Each defines ``NAME``, ``HELP``, ``DESCRIPTION``, ``EXAMPLES``,
``add_arguments(parser)`` and ``run(args) -> exit code``; ``engine.cli`` lists them in ``COMMANDS``."""
