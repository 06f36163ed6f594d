"""Fixtures shared by every test folder."""

pytest_plugins = ["tests.support.objectstores", "tests.support.training", "tests.support.controlplane"]
