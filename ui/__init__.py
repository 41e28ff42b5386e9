"""Helpers of the Streamlit app (app.py, pages/): URL state, cached loaders, images, charts.

Only the app imports this package; ``falcon_core`` never does.
"""
