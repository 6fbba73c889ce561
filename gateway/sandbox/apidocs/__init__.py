"""The API documentation page on the sandbox listener (/docs): the DCR API rendered from the OpenAPI document,
code samples in the sample module's languages, and a Postman collection of the flow."""

from .routes import add_routes

__all__ = ["add_routes"]
