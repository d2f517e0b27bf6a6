"""A caching HTTP proxy for Tesla Powerwall gateways."""

__version__ = "0.1.0"
