"""The rule language: rule files read with their source positions (``source``, ``load``, ``validation``),
the pydantic models of rules and knowledge bases (``rulemodel``), templates, condition trees, who a knowledge base
is about (``scope``) and the checks across rules (``check``).

May import ``engine.core``.
"""
