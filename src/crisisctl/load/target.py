"""Targets, which live in the transport room (`crisisctl.transport.target`); re-exported for
the load engine's modules."""

from __future__ import annotations

from crisisctl.transport.target import Target, check_loopback_url, is_loopback_host, parse_url

__all__ = ["Target", "check_loopback_url", "is_loopback_host", "parse_url"]
