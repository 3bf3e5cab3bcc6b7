"""One folder per task; each supplies only what differs from the core (docs/architecture.md)."""
