"""Pytest fixtures for the allocator tests (registered in conftest.py via pytest_plugins)."""
