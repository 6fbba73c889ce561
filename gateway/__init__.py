"""dcr-gateway: a policy-enforcing gateway for UK Open Banking Dynamic Client Registration."""

__version__ = "0.1.0"
