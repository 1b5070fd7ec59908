"""Locust entry file: the `flash_crowd` load shape (see locustfiles/shapes.py).

locust -f locustfiles/adserver.py,locustfiles/shape_flash_crowd.py --headless --host URL
"""

from __future__ import annotations

from spikegate.locustfiles.loadshape import SpikegateShape


class FlashCrowdShape(SpikegateShape):
    shape_name = "flash_crowd"
