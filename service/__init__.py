"""The runtime the workers share (settings, Redis store, Kafka bus, metrics) and the HTTP API."""
