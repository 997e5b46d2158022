"""Population runs: ``evaluate_many`` and ``mascds batch`` on Dask (``batch``, ``batch_run``), FHIR Bulk
Data exports (``bulk``).

May import the stages below it: ``core`` to ``authoring``.
"""
