"""LaDa core: configuration, wire stubs, Redis state store, reasoning tasks and LaDa math.

The three services (allocator, llm_service, slm_agent) are thin layers over this package.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lada")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"
