"""The HTTP edge: settings, request/response schemas, the FastAPI app mounted in the
BentoML service, and the per-worker runtime that wires packs, guardrails, feedback
and monitoring together."""
