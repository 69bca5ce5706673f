"""Fixtures for the contract tests."""
import pytest

from project import load_asl, load_template


@pytest.fixture(scope="session")
def template():
    return load_template()


@pytest.fixture(scope="session")
def asl():
    return load_asl()
