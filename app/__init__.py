"""Guide-Align gateway: an OpenAI-compatible proxy that injects retrieved guidelines."""
