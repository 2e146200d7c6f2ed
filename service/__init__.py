"""The HTTP edge: settings, request/response schemas, the FastAPI app mounted in the
BentoML service, the data plane its routes call, the served-state holder, and the
wiring that builds one worker's parts from settings."""
