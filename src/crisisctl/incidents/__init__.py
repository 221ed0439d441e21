"""The incident store (phase 6, "learn"): incidents, their timeline, action items, post-mortems.

``db`` opens the database (SQLite file by default, PostgreSQL by URL) and keeps the schema at the
Alembic head; ``store`` and ``followups`` are the service functions; ``baselines`` keeps triage's
healthy profiles; ``postmortem`` and ``notify`` render what was stored.
"""
