"""Persistence: ports, the SQL store for SQLite and PostgreSQL, schema and migrations."""
