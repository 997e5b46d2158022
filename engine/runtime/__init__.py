"""Evaluating a snapshot as of a time: facts from the snapshot (with ``regimen``, ``anaphylaxis`` and
``history``), matching (``match``, the reference backend; ``durable_backend``, the Rete and the only module that
imports durable_rules), decisions (``evaluate``, ``timing``), scores, descriptions and the ``Result``; ``kb``
holds a loaded, compiled knowledge base and evaluates with either backend.

May import ``engine.core``, ``engine.language`` and ``engine.compiler``.
"""
