"""Metrics (UAR, WAR, confusion), results files and plots, strategy figures."""
