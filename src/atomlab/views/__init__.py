"""Figures shared by the dashboard and the demo report (plotly figure dicts from store data)."""
