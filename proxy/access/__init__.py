"""Who may generate: origins, API keys, user tokens, client addresses and rate limits."""
