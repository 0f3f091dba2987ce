"""`prober serve`: scheduled probing and the Prometheus exporter.

scheduler.py runs every endpoint on its interval, metrics.py turns the latest
reports into series, web.py serves them, app.py ties them together.
"""
