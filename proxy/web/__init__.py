"""What every request crosses: its observation, CORS, the last error handling, and responses."""
