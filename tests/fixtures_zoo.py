"""Pytest fixtures for the zoo tests (registered in conftest.py via pytest_plugins)."""
