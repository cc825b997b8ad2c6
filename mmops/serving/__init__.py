"""Serving: the BentoML service, its request/response schemas, and packaging into the model store + bentos."""
