"""The rule language: rule files read with their source positions (``source``, ``load``, ``validation``),
the pydantic models of a rule (``rulemodel``) and of its parts (``fields``, ``conditions``, ``actions``,
``derivations``, ``metadata``), templates, condition trees, who a knowledge base is about (``scope``) and the
checks across rules (``check``).

May import ``engine.core``.
"""
