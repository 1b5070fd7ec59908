"""Locust entry file: the `steady` load shape (see locustfiles/shapes.py).

locust -f locustfiles/adserver.py,locustfiles/shape_steady.py --headless --host URL
"""

from __future__ import annotations

from spikegate.locustfiles.loadshape import SpikegateShape


class SteadyShape(SpikegateShape):
    shape_name = "steady"
