"""The REST API: FastAPI app, authentication, error envelope and one module of routes per noun."""
