"""Scenario ``vxlan-cross-subnet``: deployed once for the modules of this package (see conftest.py)."""
