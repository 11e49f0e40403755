"""Long-running Kafka workers, all driven by the same poll, handle and commit runner."""
