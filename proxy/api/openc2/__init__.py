"""OpenC2 consumer: the routes of /.well-known/openc2 and the 2018 connector's paths."""

from proxy.api.openc2.consumer import PATHS, CommandLimit, doc_for, routes

__all__ = ["PATHS", "CommandLimit", "doc_for", "routes"]
