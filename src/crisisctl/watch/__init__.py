"""`crisisctl watch`: continuous detection, alerting and an automated first response.

Scrape targets (guards, Prometheus endpoints, HTTP probes, this host) → a bounded series store
→ rules (threshold, SLO burn rate, anomaly, leak) → alerts (`model.Alert`, deduplicated by rule
and label set) → the response: incidents, notifications, runbooks and escalation.
"""
