import pytest

pytest.importorskip("metaworld")
