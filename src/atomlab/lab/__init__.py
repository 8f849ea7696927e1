"""The lab end to end: the demo that runs the data spine (docs/demo.md)."""
