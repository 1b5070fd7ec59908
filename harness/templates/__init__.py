"""Jinja2 templates of the reports (package data: shipped in the wheel)."""
