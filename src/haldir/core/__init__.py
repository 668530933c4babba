"""Pure domain: no store, HTTP, environment or wall clock in here."""
