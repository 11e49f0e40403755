"""The HTTP API (FastAPI): event intake, live journeys, schema and health."""
