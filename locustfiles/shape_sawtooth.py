"""Locust entry file: the `sawtooth` load shape (see locustfiles/shapes.py).

locust -f locustfiles/adserver.py,locustfiles/shape_sawtooth.py --headless --host URL
"""

from __future__ import annotations

from spikegate.locustfiles.loadshape import SpikegateShape


class SawtoothShape(SpikegateShape):
    shape_name = "sawtooth"
