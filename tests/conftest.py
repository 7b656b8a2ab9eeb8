"""Root test configuration: the lab fixtures (unique lab names, free mgmt subnets, teardown) and
the real Kubernetes control plane for tests that need an API but no lab."""
pytest_plugins = ["calyxlab.pytest_plugin", "calyxlab.controlplane.pytest_plugin", "faultreport"]
