"""Locust entry file: the `step` load shape (see locustfiles/shapes.py).

locust -f locustfiles/adserver.py,locustfiles/shape_step.py --headless --host URL
"""

from __future__ import annotations

from spikegate.locustfiles.loadshape import SpikegateShape


class StepShape(SpikegateShape):
    shape_name = "step"
