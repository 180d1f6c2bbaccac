"""The HTTP service (FastAPI): routes over the same functions the CLI calls, keys and roles, problem
details, idempotency, background jobs, metrics, FHIR output and the auditors' web page."""
