"""The version of the gateway, read by the package metadata and the OpenAPI document."""

__version__ = "0.1.0"
