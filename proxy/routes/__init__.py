"""The gateway's endpoints, one module per front: chat (the seed's API), openai_api, ops
(health, models, metrics, the page) and admin."""
