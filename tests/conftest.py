import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """FLOPs are cached per user: tests use a cache of their own (shared within a worker)."""
    monkeypatch.setenv("CNNEXPORT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnexport-cache"))
