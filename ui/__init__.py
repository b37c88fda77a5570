"""Shared Streamlit helpers for app.py and pages/ (the UI layer: read inputs, call analysis, render)."""
