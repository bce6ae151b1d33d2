"""Turning trained models into servable version folders (save), and later optimizing them."""
