"""The pure journey domain: event contract, journey maps, state and its fold. No network I/O."""
