"""Serving: the exported policy (``export``) and the HTTP service with a live catalogue (``app``)."""

from hsrl.serve.export import ExportedPolicy, export_policy, load_export

__all__ = ["ExportedPolicy", "export_policy", "load_export"]
