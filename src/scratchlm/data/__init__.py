"""Text in, token shards out: sources -> prepare -> loader (see docs/architecture.md)."""
