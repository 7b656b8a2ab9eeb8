"""Root test configuration: the lab fixtures (unique lab names, free mgmt subnets, teardown)."""
pytest_plugins = ["calyxlab.pytest_plugin"]
