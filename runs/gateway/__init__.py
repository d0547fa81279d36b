"""The model gateway: the client (the openai SDK), retries, pricing and circuit breakers."""
