"""The web dashboard over the data home (docs/dashboard.md)."""
