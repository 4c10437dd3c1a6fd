"""Security regression tests, each written as an attacker's (or an accident's) session."""
