"""Locust entry file: the `ramp_to_knee` load shape (see locustfiles/shapes.py).

locust -f locustfiles/adserver.py,locustfiles/shape_ramp_to_knee.py --headless --host URL
"""

from __future__ import annotations

from spikegate.locustfiles.loadshape import SpikegateShape


class RampToKneeShape(SpikegateShape):
    shape_name = "ramp_to_knee"
