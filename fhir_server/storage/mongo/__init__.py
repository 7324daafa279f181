"""The production engine: MongoDB through PyMongo's async API (transactions on a replica set)."""

from fhir_server.storage.mongo.engine import MongoStorage

__all__ = ["MongoStorage"]
