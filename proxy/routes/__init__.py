"""The fronts: the seed's API, the OpenAI-compatible API, the operational and admin routes."""
