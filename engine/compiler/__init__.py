"""Compiling a checked knowledge base: the intermediate representation (``ir``: queries, leaves, trees,
scores) and the compiler from rule models to it (``compile``).

May import ``engine.core`` and ``engine.language``.
"""
