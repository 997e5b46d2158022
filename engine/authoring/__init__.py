"""Tools for rule and case authors: case tests (``casetest``), rule coverage, the linter, the rule
catalogue and the JSON Schemas of rule and case files.

May import the stages below it: ``core`` to ``outputs``.
"""
