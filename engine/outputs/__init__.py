"""Showing results: text rendering (``render``), why a rule did or did not fire (``explain``), a timeline
replayed at every event (``timeline``) and its chart (``plot``).

May import the stages below it: ``core``, ``language``, ``compiler``, ``runtime``, ``records``.
"""
