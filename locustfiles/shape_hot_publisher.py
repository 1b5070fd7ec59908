"""Locust entry file: the `hot_publisher` load shape (see locustfiles/shapes.py).

locust -f locustfiles/adserver.py,locustfiles/shape_hot_publisher.py --headless --host URL
"""

from __future__ import annotations

from spikegate.locustfiles.loadshape import SpikegateShape


class HotPublisherShape(SpikegateShape):
    shape_name = "hot_publisher"
