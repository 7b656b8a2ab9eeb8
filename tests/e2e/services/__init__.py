"""Scenario ``services``: deployed once for the modules of this package (see conftest.py)."""
