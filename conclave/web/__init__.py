"""The web face: HTTP listeners and their ASGI applications (FastAPI on uvicorn)."""
