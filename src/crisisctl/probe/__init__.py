"""Probes used by triage: timed HTTP requests, the guard's status and host resource snapshots."""
