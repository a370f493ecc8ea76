"""Clean-up defaults from the model's GSD."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("gsd", "expected"), [(None, (500.0, 200.0)), (0.6, (500.0, 200.0)),
                                               (2.0, (500.0, 200.0)), (10.0, (10000.0, 5000.0))])
def test_auto_filters_follow_the_model_gsd(gsd, expected):
    from engine.defaults import auto_filters

    assert auto_filters(gsd) == expected
