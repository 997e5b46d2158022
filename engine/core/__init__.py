"""What every stage shares: errors and diagnostics, exit codes, times, units, the reviewed vocabulary (its
tables in ``engine/data``) and the patient snapshot the runtime evaluates.

Imports nothing else from ``engine``.
"""
