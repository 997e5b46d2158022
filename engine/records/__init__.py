"""Patient records in and out: case files (``casemodel``, ``ingest``) and FHIR R4 (``fhir``: lean structs on
the request path, ``fhir_lean`` and ``fhir_elements``, or every element validated with fhir.resources;
``fhir_map``: resources to snapshot entries; ``fhir_codes``; ``fhir_export``: a snapshot as a Bundle).

May import ``engine.core``, ``engine.language``, ``engine.compiler`` and ``engine.runtime``.
"""
