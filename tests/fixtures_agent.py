"""Pytest fixtures for the agent tests (registered in conftest.py via pytest_plugins)."""
