"""Shared by every test: assertion rewriting for helper modules that assert."""

import pytest

# compare.py asserts; the integration tests import it too, so register it before either.
pytest.register_assert_rewrite("tests.unit.domain.compare")
