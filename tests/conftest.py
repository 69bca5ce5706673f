"""Fixtures for the contract tests."""
import os

import pytest

from project import load_asl, load_template


@pytest.fixture(scope="session")
def template():
    # FLEET_TEMPLATE: check another template (local-stack/scenarios/iam_mutations.py)
    path = os.environ.get("FLEET_TEMPLATE")
    return load_template(path) if path else load_template()


@pytest.fixture(scope="session")
def asl():
    return load_asl()
