"""Pytest fixtures for the llm tests (registered in conftest.py via pytest_plugins)."""
