import pytest

from tests.convert.helpers import ImageServer


@pytest.fixture
def image_server():
    with ImageServer() as server:
        yield server
