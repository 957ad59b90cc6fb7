"""Serving: the exported policy (``export``), the recommendation path (``recommender``), the durable live
catalogue (``catalogue``) and the HTTP service (``app``)."""

from hsrl.serve.catalogue import ChangeLog, LiveCatalogue
from hsrl.serve.export import ExportedPolicy, export_policy, load_export
from hsrl.serve.recommender import MicroBatcher, Recommender, Slates, UserQuery

__all__ = [
    "ChangeLog",
    "ExportedPolicy",
    "LiveCatalogue",
    "MicroBatcher",
    "Recommender",
    "Slates",
    "UserQuery",
    "export_policy",
    "load_export",
]
