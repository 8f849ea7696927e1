"""Cross-cutting services every capability uses: settings, logging, metrics, resilience,
SQLite, errors and clocks. Nothing here imports the rest of atomlab."""
